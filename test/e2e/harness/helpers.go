package harness

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// AppImage is the image name of the test application (test/e2e/app).
const AppImage = "weft.dev/e2e-app:latest"

// Eventually polls cond until it returns true, failing t with the last
// error or message after timeout. Timeouts here bound waiting, they do not
// measure anything.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached after %s (last error: %v)", what, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Create creates objects, ignoring those that exist.
func (c *Cluster) Create(t testing.TB, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := c.Client.Create(context.Background(), o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating %T %s/%s: %v", o, o.GetNamespace(), o.GetName(), err)
		}
	}
}

// App returns a Deployment and Service of the test application: replicas
// pods serving HTTP on 8080 behind Service name:80.
func App(ns, name string, replicas int32, extraLabels map[string]string) (*appsv1.Deployment, *corev1.Service) {
	labels := map[string]string{"app": name}
	podLabels := map[string]string{"app": name}
	for k, v := range extraLabels {
		podLabels[k] = v
	}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{
					ServiceAccountName:            name,
					TerminationGracePeriodSeconds: ptr.To[int64](2),
					Containers: []corev1.Container{{
						Name:  "app",
						Image: AppImage,
						Args:  []string{"--listen=:8080", "--service=" + name},
						Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
							FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
							HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")}}},
					}},
				},
			},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), AppProtocol: ptr.To("http")}},
		},
	}
	return dep, svc
}

// Namespace creates a namespace (with labels) and the ServiceAccounts given.
func (c *Cluster) Namespace(t testing.TB, name string, labels map[string]string, serviceAccounts ...string) {
	t.Helper()
	c.Create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}})
	for _, sa := range serviceAccounts {
		c.Create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: name}})
	}
}

// WaitReady waits until the Deployment has all its replicas ready and
// up to date.
func (c *Cluster) WaitReady(t testing.TB, ns, name string, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, "deployment "+ns+"/"+name+" ready", func() (bool, error) {
		var d appsv1.Deployment
		if err := c.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &d); err != nil {
			return false, err
		}
		want := ptr.Deref(d.Spec.Replicas, 1)
		s := d.Status
		ok := s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.ReadyReplicas == want && s.Replicas == want
		return ok, fmt.Errorf("status %+v", s)
	})
}

// Pods lists the running pods matching labels.
func (c *Cluster) Pods(t testing.TB, ns string, labels map[string]string) []corev1.Pod {
	t.Helper()
	var l corev1.PodList
	if err := c.Client.List(context.Background(), &l, client.InNamespace(ns), client.MatchingLabels(labels)); err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			out = append(out, p)
		}
	}
	return out
}

// Exec runs a command inside a pod's network namespace (as root, like
// `kubectl debug` with the pod's network) and returns its output.
func (c *Cluster) Exec(ns, pod string, name string, args ...string) (string, error) {
	r := c.kubelet.byKey(ns + "/" + pod)
	if r == nil {
		return "", fmt.Errorf("pod %s/%s is not running on this node", ns, pod)
	}
	// With the pod's /etc/hosts, so Service names resolve as in the pod.
	script := fmt.Sprintf("mount --bind %q /etc/hosts && exec \"$@\"", filepath.Join(r.dir, "hosts"))
	cmdArgs := append([]string{"netns", "exec", r.netns, "unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", name}, args...)
	out, err := exec.Command("ip", cmdArgs...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in pod %s/%s: %s %s: %w: %s", ns, pod, name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// PodLog returns what a container of a running pod wrote.
func (c *Cluster) PodLog(ns, pod, container string) string {
	r := c.kubelet.byKey(ns + "/" + pod)
	if r == nil {
		return ""
	}
	out, _ := exec.Command("cat", r.logPath(container)).Output()
	return string(out)
}

func (k *kubelet) byKey(key string) *podRun {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, r := range k.pods {
		if r.key == key {
			return r
		}
	}
	return nil
}

// PodNetns names the network namespace of a running pod, for commands a
// person runs by hand (ip netns exec NAME ...).
func (c *Cluster) PodNetns(ns, pod string) string {
	if r := c.kubelet.byKey(ns + "/" + pod); r != nil {
		return r.netns
	}
	return ""
}
