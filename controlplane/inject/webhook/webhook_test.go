package webhook

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/controlplane/inject"
	"github.com/weftmesh/weft/proxy/sidecar"
)

// warnings collects the warnings the API server relays from the webhook, as
// kubectl would print them.
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.list
	w.list = nil
	return out
}

func newNamespace(t *testing.T, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "inject-", Labels: labels}}
	if err := suite.env.Client.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { suite.env.Client.Delete(context.Background(), ns) })
	return ns.Name
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func env(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// TestInjectThroughAPIServer creates pods through the real API server, which
// calls the injector as the operator registers it (both webhooks), and
// checks what is stored.
func TestInjectThroughAPIServer(t *testing.T) {
	ctx := context.Background()
	warn := &warnings{}
	cfg := rest.CopyConfig(suite.env.Config)
	cfg.WarningHandler = warn
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	meshed := newNamespace(t, map[string]string{inject.LabelInject: inject.ValueEnabled})
	plain := newNamespace(t, nil)
	already, err := inject.InjectObject(testPod(meshed, "already"), func() inject.Config {
		c := suite.cfg
		c.TrustAnchorsPEM = suite.anchors
		return c
	}())
	if err != nil {
		t.Fatal(err)
	}

	injected := func(t *testing.T, pod *corev1.Pod) {
		t.Helper()
		if names := containerNames(pod.Spec.InitContainers); !slices.Equal(names, []string{inject.InitContainerName, inject.ProxyContainerName}) {
			t.Fatalf("init containers = %v, want proxy-init and the proxy", names)
		}
		if pod.Annotations[inject.AnnotationInjected] != "stable" || pod.Labels[inject.LabelRevision] != "stable" {
			t.Errorf("annotations %v labels %v", pod.Annotations, pod.Labels)
		}
		if got := env(pod.Spec.InitContainers[1], inject.EnvTrustAnchors); got != suite.anchors {
			t.Errorf("%s = %q, want the trust bundle", inject.EnvTrustAnchors, got)
		}
		if _, ok := pod.Annotations[inject.AnnotationInjectSkipped]; ok {
			t.Errorf("injected pod has %s", inject.AnnotationInjectSkipped)
		}
	}
	untouched := func(t *testing.T, pod *corev1.Pod) {
		t.Helper()
		if len(pod.Spec.InitContainers) != 0 || pod.Annotations[inject.AnnotationInjected] != "" {
			t.Errorf("pod was injected: init containers %v, annotations %v", containerNames(pod.Spec.InitContainers), pod.Annotations)
		}
	}
	skipped := func(reason string) func(*testing.T, *corev1.Pod) {
		return func(t *testing.T, pod *corev1.Pod) {
			t.Helper()
			untouched(t, pod)
			if got := pod.Annotations[inject.AnnotationInjectSkipped]; !strings.Contains(got, reason) {
				t.Errorf("%s = %q, want it to contain %q", inject.AnnotationInjectSkipped, got, reason)
			}
		}
	}

	for _, tc := range []struct {
		name        string
		pod         *corev1.Pod
		check       func(*testing.T, *corev1.Pod)
		wantWarning string
		wantErr     string
	}{
		{name: "labelled namespace", pod: testPod(meshed, "web"), check: injected},
		{name: "generateName", pod: func() *corev1.Pod {
			p := testPod(meshed, "")
			p.GenerateName = "web-"
			return p
		}(), check: injected},
		{name: "probes go to the proxy", pod: func() *corev1.Pod {
			p := testPod(meshed, "probed")
			p.Spec.Containers[0].LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
				HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}}
			p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
				TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}}
			return p
		}(), check: func(t *testing.T, pod *corev1.Pod) {
			injected(t, pod)
			app := pod.Spec.Containers[0]
			for _, p := range []*corev1.Probe{app.LivenessProbe, app.ReadinessProbe} {
				if p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != 4191 || !strings.HasPrefix(p.HTTPGet.Path, "/app-probe/app/") {
					t.Errorf("stored probe = %+v, want the proxy's admin port", p.ProbeHandler)
				}
			}
			if args := strings.Join(pod.Spec.InitContainers[0].Args, " "); strings.Contains(args, "skip-inbound") {
				t.Errorf("proxy-init excludes ports: %s", args)
			}
			probes, err := sidecar.ParseAppProbes(env(pod.Spec.InitContainers[1], inject.EnvAppProbes))
			if err != nil || len(probes) != 2 || probes[0].Port != 8080 || probes[0].Path != "/healthz" || probes[1].Type != "tcp" {
				t.Errorf("the proxy reads probes %+v, %v", probes, err)
			}
		}},
		{name: "unlabelled namespace", pod: testPod(plain, "web"), check: func(t *testing.T, pod *corev1.Pod) {
			untouched(t, pod)
			if _, ok := pod.Annotations[inject.AnnotationInjectSkipped]; ok {
				t.Errorf("a pod that never asked for the mesh is annotated: %v", pod.Annotations)
			}
		}},
		{name: "pod label opts in elsewhere", pod: func() *corev1.Pod {
			p := testPod(plain, "opt-in")
			p.Labels = map[string]string{inject.LabelInject: inject.ValueEnabled}
			return p
		}(), check: injected},
		{name: "pod label in a selected namespace: injected once", pod: func() *corev1.Pod {
			p := testPod(meshed, "both")
			p.Labels = map[string]string{inject.LabelInject: inject.ValueEnabled}
			return p
		}(), check: injected},
		{name: "pod annotation opts in elsewhere", pod: func() *corev1.Pod {
			p := testPod(plain, "annotated")
			p.Annotations = map[string]string{inject.AnnotationInject: inject.ValueEnabled}
			return p
		}(), check: injected},
		{name: "misspelt annotation elsewhere is reported", pod: func() *corev1.Pod {
			p := testPod(plain, "typo-elsewhere")
			p.Annotations = map[string]string{inject.AnnotationInject: "yes"}
			return p
		}(), check: skipped(`unknown value "yes"`), wantWarning: `unknown value "yes"`},
		{name: "pod label opts out", pod: func() *corev1.Pod {
			p := testPod(meshed, "label-opt-out")
			p.Labels = map[string]string{inject.LabelInject: inject.ValueDisabled}
			return p
		}(), check: func(t *testing.T, pod *corev1.Pod) {
			untouched(t, pod)
			if _, ok := pod.Annotations[inject.AnnotationInjectSkipped]; ok {
				t.Errorf("the webhook was called for a pod labelled disabled: %v", pod.Annotations)
			}
		}},
		{name: "pod annotation opts out", pod: func() *corev1.Pod {
			p := testPod(meshed, "opt-out")
			p.Annotations = map[string]string{inject.AnnotationInject: inject.ValueDisabled}
			return p
		}(), check: skipped("mesh.weft.dev/inject=disabled")},
		{name: "misspelt annotation is reported", pod: func() *corev1.Pod {
			p := testPod(meshed, "typo")
			p.Annotations = map[string]string{inject.AnnotationInject: "true"}
			return p
		}(), check: skipped(`unknown value "true"`), wantWarning: `unknown value "true"`},
		{name: "host network", pod: func() *corev1.Pod {
			p := testPod(meshed, "host")
			p.Spec.HostNetwork = true
			return p
		}(), check: skipped("host network"), wantWarning: "pod not injected: pod uses the host network"},
		{name: "already injected", pod: already, check: func(t *testing.T, pod *corev1.Pod) {
			if names := containerNames(pod.Spec.InitContainers); !slices.Equal(names, []string{inject.InitContainerName, inject.ProxyContainerName}) {
				t.Errorf("init containers = %v, want one proxy-init and one proxy", names)
			}
			if _, ok := pod.Annotations[inject.AnnotationInjectSkipped]; ok {
				t.Errorf("already injected pod was annotated: %v", pod.Annotations)
			}
		}},
		{name: "kube-system is never sent to the webhook", pod: func() *corev1.Pod {
			p := testPod("kube-system", "system")
			p.Annotations = map[string]string{inject.AnnotationInject: inject.ValueEnabled}
			return p
		}(), check: func(t *testing.T, pod *corev1.Pod) {
			untouched(t, pod)
			if _, ok := pod.Annotations[inject.AnnotationInjectSkipped]; ok {
				t.Errorf("the webhook was called for kube-system: %v", pod.Annotations)
			}
		}},
		{name: "container as the proxy's UID is refused", pod: func() *corev1.Pod {
			p := testPod(meshed, "uid")
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr.To[int64](2102)}
			return p
		}(), wantErr: `container "app" runs as UID 2102, the UID reserved for the weft proxy`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			warn.take()
			got, err := cs.CoreV1().Pods(tc.pod.Namespace).Create(ctx, tc.pod, metav1.CreateOptions{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Create() error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Create() error = %v", err)
			}
			t.Cleanup(func() { cs.CoreV1().Pods(got.Namespace).Delete(ctx, got.Name, metav1.DeleteOptions{}) })
			// What is stored, not what Create returned.
			stored, err := cs.CoreV1().Pods(got.Namespace).Get(ctx, got.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, stored)
			ws := strings.Join(warn.take(), "\n")
			if tc.wantWarning == "" && ws != "" {
				t.Errorf("unexpected warnings: %s", ws)
			}
			if !strings.Contains(ws, tc.wantWarning) {
				t.Errorf("warnings %q lack %q", ws, tc.wantWarning)
			}
		})
	}
}

// TestServerSurvivesMalformedReviews sends garbage to the running server
// over TLS, then checks that the API server still gets pods injected.
func TestServerSurvivesMalformedReviews(t *testing.T) {
	c := httpsClient()
	for _, body := range []string{"", "{", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, strings.Repeat("[", 1<<20)} {
		resp, err := c.Post(suite.hookURL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("body %.20q: status %d, want 400", body, resp.StatusCode)
		}
	}
	meshed := newNamespace(t, map[string]string{inject.LabelInject: inject.ValueEnabled})
	pod := testPod(meshed, "after")
	if err := suite.env.Client.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if pod.Annotations[inject.AnnotationInjected] == "" {
		t.Errorf("pod created after malformed requests was not injected: %v", pod.Annotations)
	}
}
