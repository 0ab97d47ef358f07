// Package e2e runs the whole mesh on one machine (see test/e2e/harness): the
// operator installs the control plane from a MeshControlPlane, the webhook
// injects real pods, proxies get identities and configuration from the
// control plane, and traffic between pods goes through them.
package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/test/e2e/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// mesh is one installed mesh shared by the tests of this package.
type mesh struct {
	*harness.Cluster
	version string
	// startOperator runs the operator; stopOperator stops it.
	startOperator func()
	stopOperator  func()
}

// installMesh starts the cluster and the operator, applies a
// MeshControlPlane and waits for it to be Ready.
func installMesh(t *testing.T, spec meshv1alpha1.MeshControlPlaneSpec) *mesh {
	t.Helper()
	c := harness.Start(t)
	op, err := c.Binary("manager")
	if err != nil {
		t.Fatal(err)
	}
	m := &mesh{Cluster: c, version: spec.Version}
	m.startOperator = func() {
		m.stopOperator = c.Process(op, filepath.Join(c.Dir(), "operator.log"),
			"--leader-elect=false", "--health-probe-bind-address=127.0.0.1:0", "--metrics-bind-address=0")
	}
	m.startOperator()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(c.Dir(), "operator.log"))
			t.Logf("operator log (last 4 KiB):\n%s", tail(b, 4096))
		}
	})
	mcp := &meshv1alpha1.MeshControlPlane{ObjectMeta: metav1.ObjectMeta{Name: "weft"}, Spec: spec}
	c.Create(t, mcp)
	harness.Eventually(t, 3*time.Minute, "MeshControlPlane Ready", func() (bool, error) {
		if err := c.Client.Get(context.Background(), client.ObjectKeyFromObject(mcp), mcp); err != nil {
			return false, err
		}
		ready := meta.FindStatusCondition(mcp.Status.Conditions, meshv1alpha1.ConditionReady)
		if ready == nil {
			return false, fmt.Errorf("no Ready condition")
		}
		return ready.Status == metav1.ConditionTrue, fmt.Errorf("%s: %s", ready.Reason, ready.Message)
	})
	return m
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// meshedNamespace creates a namespace labelled for injection.
func (m *mesh) meshedNamespace(t *testing.T, name string, serviceAccounts ...string) {
	m.Namespace(t, name, map[string]string{"mesh.weft.dev/inject": "enabled"}, serviceAccounts...)
}

// curl runs curl in a pod and returns the body; failures are returned, not
// fatal, so callers can poll.
func (m *mesh) curl(ns, pod, url string, extra ...string) (string, error) {
	args := append([]string{"-sS", "--max-time", "5", "--fail-with-body"}, extra...)
	return m.Exec(ns, pod, "curl", append(args, url)...)
}

// proxyMetrics scrapes a pod's proxy admin /metrics from the node.
func (m *mesh) proxyMetrics(t *testing.T, pod corev1.Pod) string {
	t.Helper()
	res, err := http.Get("http://" + pod.Status.PodIP + ":4191/metrics")
	if err != nil {
		t.Fatalf("scraping %s: %v", pod.Name, err)
	}
	defer res.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if !strings.HasPrefix(sc.Text(), "#") {
			b.WriteString(sc.Text() + "\n")
		}
	}
	return b.String()
}

func hasProxy(p corev1.Pod) bool {
	for _, c := range p.Spec.InitContainers {
		if c.Name == "weft-proxy" {
			return true
		}
	}
	return false
}

// TestMesh installs one mesh and runs the scenarios against it, each in its
// own namespace. They run in order: the last ones restart the control plane
// and upgrade the mesh.
func TestMesh(t *testing.T) {
	m := installMesh(t, meshv1alpha1.MeshControlPlaneSpec{Version: "v1.0.0"})
	for _, sc := range []struct {
		name string
		run  func(*testing.T, *mesh)
	}{
		{"MutualTLS", testMutualTLS},
		{"TrafficSplit", testTrafficSplit},
		{"HTTPRouteCanary", testHTTPRouteCanary},
		{"Authorization", testAuthorization},
		{"GoldenMetrics", testGoldenMetrics},
		{"ControlPlaneDown", testControlPlaneDown},
		{"TrustAnchorRotation", testTrustAnchorRotation},
		{"Upgrade", testUpgrade},
	} {
		if !t.Run(sc.name, func(t *testing.T) { sc.run(t, m) }) {
			break // later scenarios assume a healthy mesh
		}
	}
}

// testMutualTLS: a meshed client calls a meshed server by its Service
// name; the request is carried over mTLS and the server's proxy sees the
// client's SPIFFE identity. A pod outside the mesh is refused in Strict
// mode.
func testMutualTLS(t *testing.T, m *mesh) {
	m.meshedNamespace(t, "shop", "web", "client")
	web, webSvc := harness.App("shop", "web", 2, nil)
	cli, _ := harness.App("shop", "client", 1, nil)
	m.Create(t, web, webSvc, cli)
	m.WaitReady(t, "shop", "web", 2*time.Minute)
	m.WaitReady(t, "shop", "client", 2*time.Minute)

	webPods := m.Pods(t, "shop", map[string]string{"app": "web"})
	client := m.Pods(t, "shop", map[string]string{"app": "client"})[0]
	for _, p := range append(webPods, client) {
		if !hasProxy(p) {
			t.Fatalf("pod %s was not injected", p.Name)
		}
	}
	clientID := "spiffe://cluster.local/ns/shop/sa/client"
	harness.Eventually(t, time.Minute, "client reaches web through the mesh", func() (bool, error) {
		out, err := m.curl("shop", client.Name, "http://web.shop.svc.cluster.local/hello")
		return err == nil && strings.Contains(out, `"service":"web"`), fmt.Errorf("%v: %s", err, out)
	})
	// The server's proxy tells the application who called, from the
	// client's certificate (and strips the header from the request).
	for range 10 {
		out, err := m.curl("shop", client.Name, "http://web.shop.svc.cluster.local/hello", "-H", "Weft-Client-Id: spiffe://cluster.local/ns/kube-system/sa/admin")
		if err != nil {
			t.Fatalf("request failed: %v %s", err, out)
		}
		if !strings.Contains(out, `"weft-client-id":"`+clientID+`"`) {
			t.Fatalf("the server did not see the client's identity: %s", out)
		}
	}
	var mtls float64
	for _, p := range webPods {
		for _, line := range strings.Split(m.proxyMetrics(t, p), "\n") {
			if strings.HasPrefix(line, "weft_responses_total{") && strings.Contains(line, `direction="inbound"`) && strings.Contains(line, `tls="true"`) {
				var v float64
				fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
				mtls += v
			}
		}
	}
	if mtls < 11 {
		t.Errorf("the web proxies counted %v inbound mTLS responses, want at least 11", mtls)
	}

	// A pod without a proxy, in a namespace without injection.
	m.Namespace(t, "outside", nil, "intruder")
	intruder, _ := harness.App("outside", "intruder", 1, nil)
	m.Create(t, intruder)
	m.WaitReady(t, "outside", "intruder", time.Minute)
	ip := webPods[0].Status.PodIP
	pod := m.Pods(t, "outside", map[string]string{"app": "intruder"})[0]
	if out, err := m.curl("outside", pod.Name, "http://"+ip+":8080/direct"); err == nil {
		t.Errorf("a plaintext client outside the mesh reached a Strict pod: %s", out)
	}
}
