package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/weftmesh/weft/internal/testenv"
)

// NodeName is the one Node all pods are bound to.
const NodeName = "weft-e2e"

// Cluster is a running local Kubernetes with our kubelet and kube-proxy.
type Cluster struct {
	Env    *testenv.Env
	Config *rest.Config
	Client client.Client
	Kube   kubernetes.Interface
	// Kubeconfig is an admin kubeconfig file for kubectl and processes.
	Kubeconfig string
	// Bin holds the binaries built from this repository.
	Bin string

	t       testing.TB
	dir     string
	caFile  string
	kubelet *kubelet
	procs   sync.WaitGroup

	buildMu sync.Mutex
	builds  map[string]*buildResult

	svcMu   sync.Mutex
	svcAt   time.Time
	svcList []corev1.Service
}

// Binaries built for a run: image repository → main package. An image's
// tag is ignored: every version of the mesh runs the code of this checkout,
// which is what an upgrade test needs (two revisions side by side).
var binaries = map[string]string{
	"weft-proxy":        "./proxy/cmd/weft-proxy",
	"weft-controlplane": "./cmd/controlplane",
	"manager":           "./cmd/manager",
	"e2e-app":           "./test/e2e/app",
}

// Start brings up the cluster for one test package. Everything stops at t's
// cleanup.
func Start(t testing.TB) *Cluster {
	t.Helper()
	if nodeName() == "" {
		t.Fatal("harness.Start must run inside the node namespace: call harness.Main from TestMain")
	}
	dir, err := os.MkdirTemp(os.Getenv(envScratch), "cluster-")
	if err != nil {
		t.Fatal(err)
	}
	// Processes run as the proxy's UID must read binaries and volumes.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := &Cluster{t: t, dir: dir, Bin: filepath.Join(dir, "bin"), builds: map[string]*buildResult{}}
	if err := os.MkdirAll(c.Bin, 0o755); err != nil {
		t.Fatal(err)
	}

	env, err := testenv.Start(testenv.Options{
		GatewayAPI:       true,
		CertManager:      true,
		APIServerAddress: NodeIP,
		APIServerFlags: map[string]string{
			// Webhooks and aggregated APIs are reached at their endpoints'
			// pod IPs: there is no cluster DNS here.
			"enable-aggregator-routing": "true",
			// envtest disables the ServiceAccount plugin; a real cluster,
			// and our kubelet, want pods to get their API token volume.
			"disable-admission-plugins": "DefaultStorageClass",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Stop() })
	c.Env, c.Config, c.Client = env, env.Config, env.Client
	c.Kube = kubernetes.NewForConfigOrDie(env.Config)

	c.caFile = filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(c.caFile, env.Config.CAData, 0o644); err != nil {
		t.Fatal(err)
	}
	admin, err := env.Environment().AddUser(envtest.User{Name: "weft-e2e-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	c.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}

	c.startControllerManager()
	c.createNode()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpState()
		}
		cancel()
		if c.kubelet != nil {
			c.kubelet.stopAll()
		}
		// Processes started by Process stop in their own cleanups, which
		// run after this one.
	})
	c.kubelet = newKubelet(c)
	go c.kubelet.run(ctx)
	go runKubeProxy(ctx, c)
	return c
}

// Binary builds (once) and returns the binary of an image repository name
// from the binaries table; the harness builds lazily so that a test builds
// only what its pods run.
func (c *Cluster) Binary(name string) (string, error) { return c.BinaryVersion(name, "") }

// versionVars are the variables each binary reports its version from.
var versionVars = map[string]string{
	"weft-proxy":        "github.com/weftmesh/weft/proxy/cpclient.Version",
	"weft-controlplane": "github.com/weftmesh/weft/internal/version.Version",
	"manager":           "github.com/weftmesh/weft/internal/version.Version",
}

// BinaryVersion is Binary for an image tag: a vX.Y.Z tag is stamped into
// the binary the way the release images are built, so a proxy "of" image
// weft-proxy:v1.1.0 reports v1.1.0 (the code is this checkout's either way).
func (c *Cluster) BinaryVersion(name, tag string) (string, error) {
	if !strings.HasPrefix(tag, "v") || versionVars[name] == "" {
		tag = ""
	}
	key := name + "@" + tag
	c.buildMu.Lock()
	b, ok := c.builds[key]
	if !ok {
		b = &buildResult{}
		c.builds[key] = b
	}
	c.buildMu.Unlock()
	b.once.Do(func() {
		pkg, known := binaries[name]
		if !known {
			b.err = fmt.Errorf("no binary is built for image %q (known: weft-proxy, weft-controlplane, manager/weft, e2e-app)", name)
			return
		}
		out := filepath.Join(c.Bin, name)
		args := []string{"build"}
		if tag != "" {
			out = filepath.Join(c.Bin, tag, name)
			args = append(args, "-ldflags", "-X "+versionVars[name]+"="+tag)
		}
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			b.err = err
			return
		}
		cmd := exec.Command("go", append(args, "-o", out, pkg)...)
		cmd.Dir = testenv.RepoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("building %s: %v\n%s", pkg, err, msg)
			return
		}
		b.path = out
	})
	return b.path, b.err
}

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// Process starts a long-running process in the node namespace (the
// operator, for instance), logs its output to log, and stops it at cleanup
// or when stop is called.
func (c *Cluster) Process(name string, log string, args ...string) (stop func()) {
	c.t.Helper()
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.procs.Add(1)
	done := make(chan struct{})
	go func() {
		defer c.procs.Done()
		cmd.Wait()
		f.Close()
		close(done)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-done
			}
		})
	}
	c.t.Cleanup(stop)
	return stop
}

// startControllerManager runs the controllers a mesh relies on: Deployments
// and ReplicaSets (workloads and the control plane), EndpointSlices, the
// garbage collector, namespaces, ServiceAccounts and the root CA ConfigMap.
// Node lifecycle is left out: our node never heartbeats.
func (c *Cluster) startControllerManager() {
	c.t.Helper()
	kcm := filepath.Join(testenv.RepoRoot(), "bin", "k8s", testenv.KubernetesVersion, "kube-controller-manager")
	if _, err := os.Stat(kcm); err != nil {
		c.t.Fatalf("%v: build it with `make kube-controller-manager`", err)
	}
	c.Process(kcm, filepath.Join(c.dir, "kube-controller-manager.log"),
		"--kubeconfig="+c.Kubeconfig,
		"--authentication-kubeconfig="+c.Kubeconfig,
		"--authorization-kubeconfig="+c.Kubeconfig,
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		"--bind-address=127.0.0.1",
		"--secure-port=0",
		"--root-ca-file="+c.caFile,
		"--controllers=deployment-controller,replicaset-controller,endpointslice-controller,garbage-collector-controller,namespace-controller,serviceaccount-controller,statefulset-controller,job-controller,disruption-controller,root-ca-certificate-publisher-controller",
		"--concurrent-deployment-syncs=5",
		"--concurrent-replicaset-syncs=5",
		"--endpointslice-updates-batch-period=50ms",
	)
}

func (c *Cluster) createNode() {
	c.t.Helper()
	ctx := context.Background()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: NodeName, Labels: map[string]string{"kubernetes.io/hostname": NodeName}}}
	if err := c.Client.Create(ctx, node); err != nil && !apierrors.IsAlreadyExists(err) {
		c.t.Fatal(err)
	}
	node.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: NodeIP}, {Type: corev1.NodeHostName, Address: NodeName}},
	}
	if err := c.Client.Status().Update(ctx, node); err != nil {
		c.t.Fatal(err)
	}
}

// Dir is the run's scratch directory (logs, pod directories).
func (c *Cluster) Dir() string { return c.dir }

// Logf logs through the test.
func (c *Cluster) Logf(format string, args ...any) { c.t.Logf(format, args...) }

func (c *Cluster) errorf(format string, args ...any) { c.t.Logf("harness: "+format, args...) }

// dumpState logs every pod's status and the end of its containers' logs, so
// a failed run says why without a rerun.
func (c *Cluster) dumpState() {
	var pods corev1.PodList
	if err := c.Client.List(context.Background(), &pods); err != nil {
		c.t.Logf("dump: listing pods: %v", err)
		return
	}
	for _, p := range pods.Items {
		var conds []string
		for _, cd := range p.Status.Conditions {
			conds = append(conds, fmt.Sprintf("%s=%s", cd.Type, cd.Status))
		}
		c.t.Logf("dump: pod %s/%s node=%q phase=%s ip=%s %v %s", p.Namespace, p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP, conds, p.Status.Message)
		r := c.kubelet.byKey(p.Namespace + "/" + p.Name)
		if r == nil {
			continue
		}
		for _, ctr := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
			b, _ := os.ReadFile(r.logPath(ctr.Name))
			if len(b) > 2000 {
				b = b[len(b)-2000:]
			}
			c.t.Logf("dump: %s/%s[%s] log:\n%s", p.Namespace, p.Name, ctr.Name, b)
		}
	}
}
