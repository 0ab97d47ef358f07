package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/test/e2e/harness"
)

// versioned deploys service name with two versions (name-v1, name-v2, one
// pod each, both selected by Service name) plus the per-version Services a
// split or route needs, and a meshed client; it returns the client pod.
func (m *mesh) versioned(t *testing.T, ns, name string) corev1.Pod {
	t.Helper()
	m.meshedNamespace(t, ns, name, "client")
	var objs []client.Object
	for _, v := range []string{"v1", "v2"} {
		dep, svc := harness.App(ns, name+"-"+v, 1, map[string]string{"service": name})
		dep.Spec.Template.Spec.ServiceAccountName = name
		objs = append(objs, dep, svc)
	}
	_, root := harness.App(ns, name, 0, nil)
	root.Spec.Selector = map[string]string{"service": name}
	cli, _ := harness.App(ns, "client", 1, nil)
	objs = append(objs, root, cli)
	m.Create(t, objs...)
	for _, d := range []string{name + "-v1", name + "-v2", "client"} {
		m.WaitReady(t, ns, d, 2*time.Minute)
	}
	return m.Pods(t, ns, map[string]string{"app": "client"})[0]
}

// spread sends n requests from pod to url, one connection each, and counts
// the answers by the Deployment (app label) that served them; "!<code>"
// counts failures.
func (m *mesh) spread(t *testing.T, ns, pod, url string, n int, headers ...string) map[string]int {
	t.Helper()
	var h strings.Builder
	for _, x := range headers {
		fmt.Fprintf(&h, " -H %q", x)
	}
	script := fmt.Sprintf(`for i in $(seq %d); do curl -s -o /dev/null --max-time 5%s -w '%%{http_code} %%header{x-app-pod}\n' %q; done`, n, h.String(), url)
	out, err := m.Exec(ns, pod, "sh", "-c", script)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		code, podName, _ := strings.Cut(line, " ")
		if code != "200" {
			got["!"+code]++
			continue
		}
		// Pod names are <deployment>-<hash>-<suffix>.
		parts := strings.Split(podName, "-")
		if len(parts) > 2 {
			podName = strings.Join(parts[:len(parts)-2], "-")
		}
		got[podName]++
	}
	return got
}

// update re-reads obj, applies mutate and writes it, retrying on conflicts
// (the mesh writes status concurrently).
func (m *mesh) update(t *testing.T, obj client.Object, mutate func()) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := m.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate()
		return m.Client.Update(context.Background(), obj)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (m *mesh) condition(t *testing.T, obj client.Object, conds func() []metav1.Condition, typ string) *metav1.Condition {
	t.Helper()
	if err := m.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	return meta.FindStatusCondition(conds(), typ)
}

// testTrafficSplit: 90/10 sends most traffic to v1 and some to v2; 0/100
// sends everything to v2. The split reports Accepted and how many proxies
// applied it.
func testTrafficSplit(t *testing.T, m *mesh) {
	cl := m.versioned(t, "split", "web")
	split := &meshv1alpha1.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "split"},
		Spec: meshv1alpha1.TrafficSplitSpec{Service: "web", Backends: []gatewayv1.BackendRef{
			{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web-v1", Port: ptr.To[gatewayv1.PortNumber](80)}, Weight: ptr.To[int32](90)},
			{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web-v2", Port: ptr.To[gatewayv1.PortNumber](80)}, Weight: ptr.To[int32](10)},
		}},
	}
	m.Create(t, split)
	url := "http://web.split.svc.cluster.local/"
	harness.Eventually(t, time.Minute, "split applied (most traffic on v1)", func() (bool, error) {
		got := m.spread(t, "split", cl.Name, url, 100)
		return got["web-v1"] >= 75 && got["web-v2"] >= 1 && got["web-v1"]+got["web-v2"] == 100, fmt.Errorf("%v", got)
	})
	harness.Eventually(t, time.Minute, "TrafficSplit status", func() (bool, error) {
		acc := m.condition(t, split, func() []metav1.Condition { return split.Status.Conditions }, meshv1alpha1.ConditionAccepted)
		if acc == nil || acc.Status != metav1.ConditionTrue || acc.ObservedGeneration != split.Generation {
			return false, fmt.Errorf("Accepted %+v", acc)
		}
		// Every proxy that carries the split, whichever of the two
		// control-plane replicas it is connected to: at least this
		// namespace's three.
		pr := split.Status.Proxies
		return pr.Total >= 3 && pr.Applied == pr.Total, fmt.Errorf("proxies %+v", pr)
	})

	m.update(t, split, func() {
		split.Spec.Backends[0].Weight, split.Spec.Backends[1].Weight = ptr.To[int32](0), ptr.To[int32](100)
	})
	harness.Eventually(t, time.Minute, "everything on v2", func() (bool, error) {
		got := m.spread(t, "split", cl.Name, url, 50)
		return got["web-v2"] == 50, fmt.Errorf("%v", got)
	})
}

// testHTTPRouteCanary: a GAMMA HTTPRoute on the Service sends requests with
// a header to v2 and the rest to v1, and reports Accepted in its status.
func testHTTPRouteCanary(t *testing.T, m *mesh) {
	cl := m.versioned(t, "canary", "api")
	port := ptr.To[gatewayv1.PortNumber](80)
	backend := func(name string) gatewayv1.HTTPBackendRef {
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: port}}}
	}
	route := &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "api-canary", Namespace: "canary"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
				Group: ptr.To[gatewayv1.Group](""), Kind: ptr.To[gatewayv1.Kind]("Service"), Name: "api", Port: port,
			}}},
			Rules: []gatewayv1.HTTPRouteRule{
				{
					Matches:     []gatewayv1.HTTPRouteMatch{{Headers: []gatewayv1.HTTPHeaderMatch{{Name: "x-canary", Value: "yes"}}}},
					BackendRefs: []gatewayv1.HTTPBackendRef{backend("api-v2")},
				},
				{BackendRefs: []gatewayv1.HTTPBackendRef{backend("api-v1")}},
			},
		},
	}
	m.Create(t, route)
	url := "http://api.canary.svc.cluster.local/"
	defer func() {
		if t.Failed() {
			m.Client.Get(context.Background(), client.ObjectKeyFromObject(route), route)
			t.Logf("route status: %+v", route.Status)
			out, _ := m.Exec("canary", cl.Name, "curl", "-s", "http://127.0.0.1:4191/config")
			t.Logf("client proxy config: %s", out)
		}
	}()
	harness.Eventually(t, time.Minute, "canary header routes to v2", func() (bool, error) {
		canary := m.spread(t, "canary", cl.Name, url, 20, "x-canary: yes")
		plain := m.spread(t, "canary", cl.Name, url, 20)
		return canary["api-v2"] == 20 && plain["api-v1"] == 20, fmt.Errorf("canary %v, plain %v", canary, plain)
	})
	harness.Eventually(t, time.Minute, "HTTPRoute status.parents", func() (bool, error) {
		if err := m.Client.Get(context.Background(), client.ObjectKeyFromObject(route), route); err != nil {
			return false, err
		}
		for _, p := range route.Status.Parents {
			if p.ControllerName == "mesh.weft.dev/controlplane" {
				acc := meta.FindStatusCondition(p.Conditions, string(gatewayv1.RouteConditionAccepted))
				refs := meta.FindStatusCondition(p.Conditions, string(gatewayv1.RouteConditionResolvedRefs))
				ok := acc != nil && acc.Status == metav1.ConditionTrue && refs != nil && refs.Status == metav1.ConditionTrue && acc.ObservedGeneration == route.Generation
				return ok, fmt.Errorf("conditions %+v", p.Conditions)
			}
		}
		return false, fmt.Errorf("no parent status from the mesh: %+v", route.Status.Parents)
	})
}

// testAuthorization: an Allow policy on a Service admits one ServiceAccount;
// another meshed caller gets 403 until the policy admits it too.
func testAuthorization(t *testing.T, m *mesh) {
	m.meshedNamespace(t, "authz", "db", "client", "other")
	db, dbSvc := harness.App("authz", "db", 1, nil)
	cli, _ := harness.App("authz", "client", 1, nil)
	other, _ := harness.App("authz", "other", 1, nil)
	m.Create(t, db, dbSvc, cli, other)
	for _, d := range []string{"db", "client", "other"} {
		m.WaitReady(t, "authz", d, 2*time.Minute)
	}
	policy := &meshv1alpha1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "db-clients", Namespace: "authz"},
		Spec: meshv1alpha1.AuthorizationPolicySpec{
			TargetRef: gatewayv1.LocalPolicyTargetReference{Kind: "Service", Name: "db"},
			Action:    meshv1alpha1.ActionAllow,
			Rules: []meshv1alpha1.AuthorizationRule{{From: []meshv1alpha1.AuthorizationSource{{
				ServiceAccounts: []meshv1alpha1.ServiceAccountRef{{Name: "client"}},
			}}}},
		},
	}
	m.Create(t, policy)
	c := m.Pods(t, "authz", map[string]string{"app": "client"})[0]
	o := m.Pods(t, "authz", map[string]string{"app": "other"})[0]
	url := "http://db.authz.svc.cluster.local/"
	harness.Eventually(t, time.Minute, "only client is allowed", func() (bool, error) {
		a := m.spread(t, "authz", c.Name, url, 5)
		b := m.spread(t, "authz", o.Name, url, 5)
		return a["db"] == 5 && b["!403"] == 5, fmt.Errorf("client %v, other %v", a, b)
	})
	m.update(t, policy, func() {
		policy.Spec.Rules[0].From[0].ServiceAccounts = append(policy.Spec.Rules[0].From[0].ServiceAccounts, meshv1alpha1.ServiceAccountRef{Name: "other"})
	})
	harness.Eventually(t, time.Minute, "other is allowed too", func() (bool, error) {
		b := m.spread(t, "authz", o.Name, url, 5)
		return b["db"] == 5, fmt.Errorf("other %v", b)
	})
	harness.Eventually(t, time.Minute, "AuthorizationPolicy status", func() (bool, error) {
		acc := m.condition(t, policy, func() []metav1.Condition { return policy.Status.Conditions }, meshv1alpha1.ConditionAccepted)
		pr := policy.Status.Proxies // db's proxy at least, whichever replica it talks to
		return acc != nil && acc.Status == metav1.ConditionTrue && acc.ObservedGeneration == policy.Generation && pr.Total >= 1 && pr.Applied == pr.Total,
			fmt.Errorf("Accepted %+v proxies %+v", acc, pr)
	})
}

// testControlPlaneDown: with every control-plane pod gone, meshed traffic
// keeps flowing on the proxies' last configuration; when the control plane
// is back, proxies reconnect and take new configuration again.
func testControlPlaneDown(t *testing.T, m *mesh) {
	cl := m.Pods(t, "split", map[string]string{"app": "client"})[0]
	url := "http://web.split.svc.cluster.local/"
	ctx := context.Background()
	rev := "weft-controlplane-" + strings.ReplaceAll(m.version, ".", "-")
	var dep appsv1.Deployment
	if err := m.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: rev}, &dep); err != nil {
		t.Fatal(err)
	}
	replicas := *dep.Spec.Replicas
	scale := func(n int32) {
		t.Helper()
		if err := m.Client.Get(ctx, client.ObjectKeyFromObject(&dep), &dep); err != nil {
			t.Fatal(err)
		}
		dep.Spec.Replicas = ptr.To(n)
		if err := m.Client.Update(ctx, &dep); err != nil {
			t.Fatal(err)
		}
	}
	// The operator owns the Deployment and would scale it back: it is
	// stopped for the duration, which is also the operator-down case.
	m.stopOperator()
	defer m.startOperator()
	scale(0)
	harness.Eventually(t, time.Minute, "control plane gone", func() (bool, error) {
		return len(m.Pods(t, "weft-system", map[string]string{"mesh.weft.dev/revision": strings.TrimPrefix(rev, "weft-controlplane-")})) == 0, nil
	})
	got := m.spread(t, "split", cl.Name, url, 50)
	if got["web-v2"] != 50 {
		t.Errorf("with the control plane down: %v, want all 50 on web-v2", got)
	}
	scale(replicas)
	m.WaitReady(t, "weft-system", rev, 2*time.Minute)
	// A change made now reaches the reconnected proxies.
	var split meshv1alpha1.TrafficSplit
	if err := m.Client.Get(ctx, client.ObjectKey{Namespace: "split", Name: "web"}, &split); err != nil {
		t.Fatal(err)
	}
	m.update(t, &split, func() {
		split.Spec.Backends[0].Weight, split.Spec.Backends[1].Weight = ptr.To[int32](100), ptr.To[int32](0)
	})
	harness.Eventually(t, 2*time.Minute, "proxies reconnected and applied the change", func() (bool, error) {
		got := m.spread(t, "split", cl.Name, url, 20)
		return got["web-v1"] == 20, fmt.Errorf("%v", got)
	})
}

// testUpgrade bumps spec.version: the operator starts the new control-plane
// revision beside the old one, moves injection to it, restarts the meshed
// workloads in batches, removes the old revision once no proxy uses it, and
// status says so. A meshed pod that no workload owns (so the upgrade does not
// restart it) sends a steady load through all of it: no request fails, and
// while it runs the old proxy, status shows the version skew.
func testUpgrade(t *testing.T, m *mesh) {
	ctx := context.Background()
	const to, ns = "v1.1.0", "split"
	url := "http://web." + ns + ".svc.cluster.local/"
	dep, _ := harness.App(ns, "steady", 1, nil)
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "steady", Namespace: ns, Labels: dep.Spec.Template.Labels}, Spec: dep.Spec.Template.Spec}
	bare.Spec.ServiceAccountName = "client"
	m.Create(t, bare)
	harness.Eventually(t, 2*time.Minute, "the load pod running", func() (bool, error) {
		return len(m.Pods(t, ns, map[string]string{"app": "steady"})) == 1, nil
	})
	l := m.startLoad(t, ns, "steady", url)

	mcp := meshv1alpha1.MeshControlPlane{ObjectMeta: metav1.ObjectMeta{Name: "weft"}}
	m.update(t, &mcp, func() { mcp.Spec.Version = to })
	harness.Eventually(t, 5*time.Minute, "every workload restarted onto the new revision, the skew in status", func() (bool, error) {
		if err := m.Client.Get(ctx, client.ObjectKey{Name: "weft"}, &mcp); err != nil {
			return false, err
		}
		var pods corev1.PodList
		if err := m.Client.List(ctx, &pods); err != nil {
			return false, err
		}
		var old []string
		for _, p := range pods.Items {
			if rev, ok := p.Labels["mesh.weft.dev/revision"]; ok && p.DeletionTimestamp == nil && p.Namespace != "weft-system" && p.Name != "steady" && rev != "v1-1-0" {
				old = append(old, p.Namespace+"/"+p.Name)
			}
		}
		skew := false
		for _, v := range mcp.Status.Proxies.ByVersion {
			if v.Version == "v1.0.0" && v.Count >= 1 {
				skew = true
			}
		}
		return len(old) == 0 && skew, fmt.Errorf("on the old revision: %v; proxies %+v; upgrade %+v", old, mcp.Status.Proxies, mcp.Status.Upgrade)
	})
	for _, d := range []string{"web-v1", "web-v2", "client"} {
		m.WaitReady(t, ns, d, 2*time.Minute)
	}
	time.Sleep(2 * time.Second)
	n, failed, err := l.stop()
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Logf("%d requests from a v1.0.0 proxy during the upgrade, failures %v", n, failed)
	if n < 20 || len(failed) > 0 {
		t.Errorf("%d requests, failures by code %v: want none", n, failed)
		t.Logf("the load pod's proxy log (last 4 KiB):\n%s", tail([]byte(m.PodLog(ns, "steady", "weft-proxy")), 4096))
	}

	// The old revision goes once its last proxy does.
	if err := m.Client.Delete(ctx, bare); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 5*time.Minute, "upgrade complete in status", func() (bool, error) {
		if err := m.Client.Get(ctx, client.ObjectKey{Name: "weft"}, &mcp); err != nil {
			return false, err
		}
		st := mcp.Status
		done := st.Version.Current == to && len(st.Revisions) == 1 && st.Revisions[0].Version == to
		return done, fmt.Errorf("version %+v revisions %+v upgrade %+v", st.Version, st.Revisions, st.Upgrade)
	})
	cl := m.Pods(t, ns, map[string]string{"app": "client"})[0]
	harness.Eventually(t, time.Minute, "traffic after the upgrade", func() (bool, error) {
		got := m.spread(t, ns, cl.Name, url, 10)
		return got["web-v2"] == 10, fmt.Errorf("%v", got)
	})
	ready := meta.FindStatusCondition(mcp.Status.Conditions, meshv1alpha1.ConditionReady)
	if ready == nil || ready.Status != metav1.ConditionTrue {
		t.Errorf("Ready after the upgrade: %+v", ready)
	}
}

// testGoldenMetrics: the client's proxy reports, per destination service,
// the request rate, success rate and latency of what it sent, in
// Prometheus format; failures (5xx) count against the success rate.
func testGoldenMetrics(t *testing.T, m *mesh) {
	cl := m.Pods(t, "split", map[string]string{"app": "client"})[0]
	before, err := harness.Scrape(cl.Status.PodIP, "outbound")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ok := m.spread(t, "split", cl.Name, "http://web.split.svc.cluster.local/", 40)
	bad := m.spread(t, "split", cl.Name, "http://web.split.svc.cluster.local/status/503", 10)
	if ok["!200"] > 0 || bad["!503"] != 10 {
		t.Fatalf("requests: %v %v", ok, bad)
	}
	after, err := harness.Scrape(cl.Status.PodIP, "outbound")
	if err != nil {
		t.Fatal(err)
	}
	var web *harness.Golden
	for _, g := range harness.Rates(before, after, time.Since(start)) {
		if g.Service == "split/web" {
			web = &g
		}
	}
	if web == nil {
		t.Fatalf("no golden metrics for split/web in %v", after)
	}
	t.Logf("golden metrics:\n%s", harness.Table([]harness.Golden{*web}))
	if d := after["split/web"].OK + after["split/web"].Failed - before["split/web"].OK - before["split/web"].Failed; d != 50 {
		t.Errorf("the proxy counted %v responses for split/web, want 50", d)
	}
	if web.SuccessRate < 0.79 || web.SuccessRate > 0.81 {
		t.Errorf("success rate %.3f, want 0.8 (40 of 50)", web.SuccessRate)
	}
	if web.RPS <= 0 || web.P50 <= 0 || web.P99 < web.P50 {
		t.Errorf("rate %.1f/s, p50 %v, p99 %v", web.RPS, web.P50, web.P99)
	}
}
