package e2e

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/test/e2e/harness"
)

// TestDemo is `make demo`: a whole mesh on this machine, two versions of a
// service behind a 90/10 TrafficSplit, a load generator, a policy that
// admits only the load generator, a refreshing golden-metrics table, and
// the commands to poke at it. It runs until Ctrl-C, then removes
// everything. It is skipped unless WEFT_DEMO=1 (make demo sets it).
func TestDemo(t *testing.T) {
	if os.Getenv("WEFT_DEMO") != "1" {
		t.Skip("the demo runs with `make demo`")
	}
	say := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	say("\n== Weft demo ==\nStarting a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager),\nthe Weft operator, and a MeshControlPlane. This takes a minute...")
	start := time.Now()
	m := installMesh(t, meshv1alpha1.MeshControlPlaneSpec{Version: "v1.0.0"})
	say("✓ Mesh ready in %s: the operator installed control plane revision v1-0-0 (2 replicas), its CA and the injection webhook.", time.Since(start).Round(time.Second))

	m.meshedNamespace(t, "demo", "web", "loadgen", "stranger")
	v1, _ := harness.App("demo", "web-v1", 2, map[string]string{"service": "web"})
	v2, _ := harness.App("demo", "web-v2", 1, map[string]string{"service": "web"})
	for _, d := range [](*corev1.PodSpec){&v1.Spec.Template.Spec, &v2.Spec.Template.Spec} {
		d.ServiceAccountName = "web"
	}
	_, svc1 := harness.App("demo", "web-v1", 0, nil)
	_, svc2 := harness.App("demo", "web-v2", 0, nil)
	root := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "demo"}, Spec: svc1.Spec}
	root.Spec.Selector = map[string]string{"service": "web"}
	load, _ := harness.App("demo", "loadgen", 1, nil)
	load.Spec.Template.Spec.Containers[0].Args = append(load.Spec.Template.Spec.Containers[0].Args, "--load=http://web.demo.svc.cluster.local/", "--rps=20")
	stranger, _ := harness.App("demo", "stranger", 1, nil)
	m.Create(t, v1, v2, svc1, svc2, root, load, stranger)
	split := &meshv1alpha1.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "demo"},
		Spec: meshv1alpha1.TrafficSplitSpec{Service: "web", Backends: []gatewayv1.BackendRef{
			{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web-v1", Port: ptr.To[gatewayv1.PortNumber](80)}, Weight: ptr.To[int32](90)},
			{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web-v2", Port: ptr.To[gatewayv1.PortNumber](80)}, Weight: ptr.To[int32](10)},
		}},
	}
	policy := &meshv1alpha1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "web-from-loadgen", Namespace: "demo"},
		Spec: meshv1alpha1.AuthorizationPolicySpec{
			TargetRef: gatewayv1.LocalPolicyTargetReference{Kind: "Namespace", Name: "demo"},
			Action:    meshv1alpha1.ActionAllow,
			Rules: []meshv1alpha1.AuthorizationRule{{From: []meshv1alpha1.AuthorizationSource{{
				ServiceAccounts: []meshv1alpha1.ServiceAccountRef{{Namespace: "demo", Name: "loadgen"}},
			}}}},
		},
	}
	m.Create(t, split, policy)
	for _, d := range []string{"web-v1", "web-v2", "loadgen", "stranger"} {
		m.WaitReady(t, "demo", d, 2*time.Minute)
	}
	say("✓ Deployed in namespace demo (labelled mesh.weft.dev/inject=enabled, so every pod got a weft-proxy):")
	say("    web-v1 ×2 and web-v2 ×1 behind Service web, TrafficSplit web: 90%% web-v1, 10%% web-v2")
	say("    loadgen: 20 requests/s to http://web.demo.svc.cluster.local/")
	say("    AuthorizationPolicy web-from-loadgen: only ServiceAccount demo/loadgen may call (namespace default is then deny)")
	say("    stranger: a meshed pod the policy does not admit")

	kubectl := filepath.Join(testenv.RepoRoot(), "bin", "k8s", testenv.KubernetesVersion, "kubectl")
	node := os.Getenv("WEFT_E2E_NODE")
	in := harness.EnterNode()
	stranger0 := m.Pods(t, "demo", map[string]string{"app": "stranger"})[0]
	load0 := m.Pods(t, "demo", map[string]string{"app": "loadgen"})[0]
	say(`
Try, in another terminal (the cluster lives in network namespace %[1]s):
  %[2]s%[3]s --kubeconfig %[4]s get pods -n demo -o wide
  %[2]s%[3]s --kubeconfig %[4]s get meshcontrolplane,trafficsplit,authorizationpolicy -A
  %[2]s%[3]s --kubeconfig %[4]s patch trafficsplit web -n demo --type=json -p '[{"op":"replace","path":"/spec/backends/0/weight","value":0}]'
  %[2]scurl -s http://%[5]s:4191/metrics | grep weft_responses_total     # the load generator's proxy
  %[2]sgo run ./cmd/weftctl check --kubeconfig %[4]s
A request from the stranger pod (meshed, but not admitted by the policy) is refused by web's proxies:
  %[2]s%[6]s
`, node, in, kubectl, m.Kubeconfig, load0.Status.PodIP, m.strangerCommand(stranger0))
	if out, err := m.Exec("demo", stranger0.Name, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "http://web.demo.svc.cluster.local/"); err == nil && out == "403" {
		say("✓ Checked: the stranger got 403 Forbidden; the load generator gets 200s (below).")
	} else {
		say("✗ The stranger was not refused as expected: %v %s", err, out)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	say("Golden metrics of the load generator's calls, every 5 s (Ctrl-C to stop and clean up):")
	prev, _ := harness.Scrape(load0.Status.PodIP, "outbound")
	last := time.Now()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			say("\nStopping: removing pods, network namespaces and processes...")
			return
		case <-tick.C:
		}
		cur, err := harness.Scrape(load0.Status.PodIP, "outbound")
		if err != nil {
			say("  (scrape failed: %v)", err)
			continue
		}
		now := time.Now()
		byPod := map[string]int{}
		for _, p := range m.Pods(t, "demo", map[string]string{"service": "web"}) {
			if in, err := harness.Scrape(p.Status.PodIP, "inbound"); err == nil {
				for _, c := range in {
					byPod[p.Labels["app"]] += int(c.OK + c.Failed)
				}
			}
		}
		fmt.Printf("\n%s%s", harness.Table(harness.Rates(prev, cur, now.Sub(last))), splitLine(byPod))
		prev, last = cur, now
	}
}

func splitLine(byPod map[string]int) string {
	total := 0
	for _, n := range byPod {
		total += n
	}
	if total == 0 {
		return ""
	}
	var parts []string
	for _, app := range []string{"web-v1", "web-v2"} {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", app, 100*float64(byPod[app])/float64(total)))
	}
	return "served so far: " + strings.Join(parts, ", ") + "\n"
}

func (m *mesh) strangerCommand(p corev1.Pod) string {
	var svc corev1.Service
	ip := "<web's ClusterIP>"
	if err := m.Client.Get(context.Background(), client.ObjectKey{Namespace: "demo", Name: "web"}, &svc); err == nil {
		ip = svc.Spec.ClusterIP
	}
	return fmt.Sprintf("ip netns exec %s curl -s -w ' → %%{http_code}\\n' http://%s/", m.PodNetns("demo", p.Name), ip)
}
