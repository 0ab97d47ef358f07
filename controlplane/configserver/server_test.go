package configserver

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// shopFixture: Services backend, backend-v1 and backend-v2 in "shop", a meshed
// pod in "shop" and two in "front"; "front" has a consumer HTTPRoute for
// shop/backend, which only front's proxies apply.
func shopFixture(t *testing.T, shop, front string) {
	t.Helper()
	create(t, namespace(shop), namespace(front),
		serviceAccount(shop, "api"), serviceAccount(front, "web"), serviceAccount(front, "other"),
		service(shop, "backend", map[string]string{"app": "backend"}),
		service(shop, "backend-v1", map[string]string{"app": "backend", "v": "1"}),
		service(shop, "backend-v2", map[string]string{"app": "backend", "v": "2"}),
		endpointSlice(shop, "backend", "10.244.1.1", "10.244.1.2"),
		endpointSlice(shop, "backend-v1", "10.244.1.1"),
		endpointSlice(shop, "backend-v2", "10.244.1.2"),
		pod(shop, "api-1", "api", true, map[string]string{"app": "backend"}),
		pod(front, "web-1", "web", true, nil),
		pod(front, "web-2", "web", true, nil),
		pod(front, "plain-1", "web", false, nil),
		route(front, "backend", shop, "backend", 90, 10),
	)
}

func getRoute(t *testing.T, ns, name string) *gatewayv1.HTTPRoute {
	t.Helper()
	var r gatewayv1.HTTPRoute
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func setWeights(t *testing.T, ns, name string, w1, w2 int32) int64 {
	t.Helper()
	r := getRoute(t, ns, name)
	r.Spec.Rules[0].BackendRefs[0].Weight = ptr.To(w1)
	r.Spec.Rules[0].BackendRefs[1].Weight = ptr.To(w2)
	if err := env.Client.Update(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return r.Generation
}

func TestRouteChangeReachesOnlyAffectedProxies(t *testing.T) {
	shopFixture(t, "shop1", "front1")
	cp := startControlPlane(t, "127.0.0.1:0")
	api := cp.proxy(t, "shop1", "api-1", "api")
	web1 := cp.proxy(t, "front1", "web-1", "web")
	web2 := cp.proxy(t, "front1", "web-2", "web")
	run(t, api)
	run(t, web1)
	run(t, web2)
	acked(t, cp.Hub, "shop1/api-1")
	w1 := acked(t, cp.Hub, "front1/web-1")
	acked(t, cp.Hub, "front1/web-2")

	// The snapshot is the compiled config: front's proxies see the route's
	// weights, and the trust bundle comes along.
	if !strings.Contains(string(web1.TrustBundle()), "BEGIN CERTIFICATE") {
		t.Errorf("snapshot came without the trust bundle")
	}
	src := "HTTPRoute front1/backend"
	gen := getRoute(t, "front1", "backend").Generation
	if a, n := cp.Hub.Applied(src, gen); a != 2 || n != 2 {
		t.Errorf("Applied(%s, %d) = %d of %d, want 2 of 2 (only front1's proxies carry a consumer route)", src, gen, a, n)
	}
	// What the replica publishes for the other replicas' status writers.
	if sa := cp.Hub.Report().Sources[src]; sa.Total != 2 || sa.applied(gen) != 2 {
		t.Errorf("Report().Sources[%s] = %+v, want 2 proxies acked at generation %d", src, sa, gen)
	}

	newGen := setWeights(t, "front1", "backend", 50, 50)
	waitUntil(t, "front1's proxies acked the new weights", func() bool {
		s1, _ := state(cp.Hub, "front1/web-1")
		s2, _ := state(cp.Hub, "front1/web-2")
		return s1.Acked != w1.Acked && s1.Acked == s1.Sent && s2.Acked == s2.Sent && len(web2.Versions()) == 2
	})
	if a, n := cp.Hub.Applied(src, newGen); a != 2 || n != 2 {
		t.Errorf("after the change Applied(%s, %d) = %d of %d, want 2 of 2", src, newGen, a, n)
	}
	// A change every proxy sees (a new Service) is a fence: had api-1 been
	// sent the weight change, that snapshot would come before this one.
	create(t, service("shop1", "extra", map[string]string{"app": "extra"}))
	waitUntil(t, "every proxy acked the new Service", func() bool {
		if len(api.Versions()) != 2 || len(web1.Versions()) != 3 || len(web2.Versions()) != 3 ||
			api.Last() != api.Versions()[1] || web1.Last() != web1.Versions()[2] {
			return false
		}
		// A proxy records a snapshot before its ack reaches the hub.
		for _, s := range cp.Hub.Proxies() {
			if s.Acked != s.Sent {
				return false
			}
		}
		return true
	})
	for _, s := range cp.Hub.Proxies() {
		if s.Acked != s.Sent || s.Error != "" {
			t.Errorf("%s: sent %s, acked %s, error %q", s.Pod, s.Sent, s.Acked, s.Error)
		}
	}
	if got := len(api.Versions()); got != 2 {
		t.Errorf("shop1/api-1 received %d snapshots, want 2: the weight change of a front1 consumer route does not concern it", got)
	}
	r := cp.Hub.Report()
	if r.Connected != 3 || r.Stale != 0 || r.ByVersion["v0.1.0"] != 3 {
		t.Errorf("Report = %+v, want 3 connected, 0 stale, 3 at v0.1.0", r)
	}
}

func TestNackIsRecorded(t *testing.T) {
	shopFixture(t, "shop2", "front2")
	cp := startControlPlane(t, "127.0.0.1:0")
	c := cp.proxy(t, "front2", "web-1", "web")
	c.Reject = func(string) string { return "route rule 0: unsupported filter" }
	run(t, c)
	var s ProxyState
	waitUntil(t, "the nack is recorded", func() bool {
		s, _ = state(cp.Hub, "front2/web-1")
		return s.Error != ""
	})
	if s.Error != "route rule 0: unsupported filter" || s.Acked != "" {
		t.Errorf("state = %+v, want the proxy's reason and nothing acked", s)
	}
	if r := cp.Hub.Report(); r.Stale != 1 || r.Connected != 1 {
		t.Errorf("Report = %+v, want 1 connected, 1 stale", r)
	}
	gen := getRoute(t, "front2", "backend").Generation
	if a, n := cp.Hub.Applied("HTTPRoute front2/backend", gen); a != 0 || n != 1 {
		t.Errorf("Applied = %d of %d, want 0 of 1 after a nack", a, n)
	}
}

func TestRefusals(t *testing.T) {
	shopFixture(t, "shop3", "front3")
	cp := startControlPlane(t, "127.0.0.1:0")
	for _, tc := range []struct {
		name, ns, pod, sa string
		certNS            string
		code              codes.Code
		msg               string
	}{
		{name: "identity of another ServiceAccount", ns: "front3", pod: "web-1", sa: "other", code: codes.PermissionDenied, msg: "runs as ServiceAccount web"},
		{name: "identity of another namespace", ns: "front3", pod: "web-1", sa: "api", certNS: "shop3", code: codes.PermissionDenied, msg: "cannot speak for pod"},
		{name: "pod not found", ns: "front3", pod: "ghost", sa: "web", code: codes.PermissionDenied, msg: "does not exist"},
		{name: "pod not meshed", ns: "front3", pod: "plain-1", sa: "web", code: codes.PermissionDenied, msg: "not meshed"},
		{name: "no client certificate", ns: "front3", pod: "web-1", code: codes.Unauthenticated, msg: "workload certificate"},
		{name: "no pod named", ns: "front3", pod: "", sa: "web", code: codes.InvalidArgument, msg: "must name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certNS := tc.certNS
			if certNS == "" {
				certNS = tc.ns
			}
			c := cp.proxy(t, certNS, tc.pod, tc.sa)
			c.Namespace = tc.ns
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			got, err := c.Once(ctx)
			if got || status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("got snapshot %v, error %v; want %s containing %q", got, err, tc.code, tc.msg)
			}
		})
	}
	if n := len(cp.Hub.Proxies()); n != 0 {
		t.Errorf("%d refused proxies are registered", n)
	}
}

func TestRestartReconnectAndConverge(t *testing.T) {
	shopFixture(t, "shop4", "front4")
	cp := startControlPlane(t, "127.0.0.1:0")
	addr := cp.Addr
	web := cp.proxy(t, "front4", "web-1", "web")
	api := cp.proxy(t, "shop4", "api-1", "api")
	run(t, web)
	run(t, api)
	before := acked(t, cp.Hub, "front4/web-1")
	acked(t, cp.Hub, "shop4/api-1")

	cp.Stop()
	cp2 := startControlPlane(t, addr)
	// Both reconnect; neither is sent its snapshot again, since the Hello's
	// last_version is what they would be sent.
	after := acked(t, cp2.Hub, "front4/web-1")
	acked(t, cp2.Hub, "shop4/api-1")
	if after.Acked != before.Acked || len(web.Versions()) != 1 || len(api.Versions()) != 1 {
		t.Errorf("after the restart web-1 acked %s (was %s) and received %d snapshots, api-1 %d; want the same version and 1 each",
			after.Acked, before.Acked, len(web.Versions()), len(api.Versions()))
	}
	setWeights(t, "front4", "backend", 10, 90)
	waitUntil(t, "web-1 converged on the change made after the restart", func() bool {
		s, _ := state(cp2.Hub, "front4/web-1")
		return len(web.Versions()) == 2 && s.Acked == web.Versions()[1]
	})
}

func TestStatusConfigMap(t *testing.T) {
	shopFixture(t, "shop5", "front5")
	create(t, namespace("weft-system"))
	cp := startControlPlane(t, "127.0.0.1:0")
	web := cp.proxy(t, "front5", "web-1", "web")
	run(t, web)
	acked(t, cp.Hub, "front5/web-1")
	nack := cp.proxy(t, "front5", "web-2", "web")
	nack.ProxyVersion = "v0.2.0"
	nack.Reject = func(string) string { return "no" }
	run(t, nack)
	waitUntil(t, "web-2's nack", func() bool { s, _ := state(cp.Hub, "front5/web-2"); return s.Error != "" })

	// Another replica's key must survive this replica's writes.
	create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "weft-proxy-status-r5"},
		Data: map[string]string{"weft-controlplane-r5-other.json": `{"connected":0,"stale":0,"byVersion":{},"updated":"2026-11-25T09:59:00Z"}`}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	w := &StatusWriter{Client: env.Client, Hub: cp.Hub, Namespace: "weft-system", Revision: "r5", Replica: "weft-controlplane-r5-abc",
		Interval: 10 * time.Millisecond, Now: func() time.Time { return now }}
	go func() { defer close(done); _ = w.Start(ctx) }()
	defer func() { cancel(); <-done }()

	var got struct {
		Connected int            `json:"connected"`
		Stale     int            `json:"stale"`
		ByVersion map[string]int `json:"byVersion"`
		Updated   string         `json:"updated"`
	}
	var cm corev1.ConfigMap
	waitUntil(t, "the ConfigMap holds both replicas' keys", func() bool {
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-proxy-status-r5"}, &cm); err != nil {
			return false
		}
		_, other := cm.Data["weft-controlplane-r5-other.json"]
		return other && json.Unmarshal([]byte(cm.Data["weft-controlplane-r5-abc.json"]), &got) == nil && got.Connected == 2
	})
	if got.Stale != 1 || got.ByVersion["v0.1.0"] != 1 || got.ByVersion["v0.2.0"] != 1 || got.Updated != "2026-11-25T10:00:00Z" {
		t.Errorf("report = %+v, want 2 connected, 1 stale (the nack), one proxy per version, updated 10:00:00Z", got)
	}
	keys := []string{}
	for k := range cm.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"weft-controlplane-r5-abc.json", "weft-controlplane-r5-other.json"}) {
		t.Errorf("keys = %v", keys)
	}
}

// An AuthorizationPolicy changes only the inbound config of the pods behind
// its Service, so only their proxies are sent a snapshot and count for it.
func TestPolicyReachesOnlySelectedProxies(t *testing.T) {
	shopFixture(t, "shop6", "front6")
	cp := startControlPlane(t, "127.0.0.1:0")
	api := cp.proxy(t, "shop6", "api-1", "api")
	web := cp.proxy(t, "front6", "web-1", "web")
	run(t, api)
	run(t, web)
	acked(t, cp.Hub, "shop6/api-1")
	acked(t, cp.Hub, "front6/web-1")

	ap := &meshv1alpha1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop6", Name: "allow-front"},
		Spec: meshv1alpha1.AuthorizationPolicySpec{
			TargetRef: gatewayv1.LocalPolicyTargetReference{Group: "", Kind: "Service", Name: "backend"},
			Action:    meshv1alpha1.ActionAllow,
			Rules:     []meshv1alpha1.AuthorizationRule{{From: []meshv1alpha1.AuthorizationSource{{Namespaces: []string{"front6"}}}}},
		},
	}
	create(t, ap)
	src := "AuthorizationPolicy shop6/allow-front"
	waitUntil(t, "api-1 acked the policy", func() bool {
		a, n := cp.Hub.Applied(src, ap.Generation)
		return a == 1 && n == 1
	})
	create(t, service("front6", "fence", map[string]string{"app": "fence"}))
	waitUntil(t, "both acked the fence Service", func() bool {
		return len(api.Versions()) == 3 && len(web.Versions()) >= 2 && acked(t, cp.Hub, "front6/web-1").Acked == web.Versions()[len(web.Versions())-1]
	})
	if n := len(web.Versions()); n != 2 {
		t.Errorf("front6/web-1 received %d snapshots, want 2: the policy does not select it", n)
	}
}

// A producer route (in its Service's namespace) applies to clients in every
// namespace, so its change reaches them all.
func TestProducerRouteReachesEveryNamespace(t *testing.T) {
	shopFixture(t, "shop7", "front7")
	cp := startControlPlane(t, "127.0.0.1:0")
	api := cp.proxy(t, "shop7", "api-1", "api")
	web := cp.proxy(t, "front7", "web-1", "web")
	run(t, api)
	run(t, web)
	acked(t, cp.Hub, "shop7/api-1")
	acked(t, cp.Hub, "front7/web-1")

	create(t, route("shop7", "v1", "shop7", "backend-v1", 70, 30))
	waitUntil(t, "both proxies acked the new producer route", func() bool {
		a, n := cp.Hub.Applied("HTTPRoute shop7/v1", 1)
		return a == 2 && n == 2
	})
	gen := setWeights(t, "shop7", "v1", 20, 80)
	waitUntil(t, "both proxies acked the weight change", func() bool {
		a, n := cp.Hub.Applied("HTTPRoute shop7/v1", gen)
		return a == 2 && n == 2
	})
	if len(api.Versions()) != 3 || len(web.Versions()) != 3 {
		t.Errorf("received %d and %d snapshots, want 3 each", len(api.Versions()), len(web.Versions()))
	}
}

// A Pod relabelled out of its Service is no longer selected by the
// Service's AuthorizationPolicy: its own inbound config, and so its
// snapshot, changes.
func TestPodRelabelReachesItsProxy(t *testing.T) {
	shopFixture(t, "shop8", "front8")
	create(t, &meshv1alpha1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop8", Name: "allow-front"},
		Spec: meshv1alpha1.AuthorizationPolicySpec{
			TargetRef: gatewayv1.LocalPolicyTargetReference{Group: "", Kind: "Service", Name: "backend"},
			Action:    meshv1alpha1.ActionAllow,
			Rules:     []meshv1alpha1.AuthorizationRule{{From: []meshv1alpha1.AuthorizationSource{{Namespaces: []string{"front8"}}}}},
		},
	})
	cp := startControlPlane(t, "127.0.0.1:0")
	api := cp.proxy(t, "shop8", "api-1", "api")
	run(t, api)
	acked(t, cp.Hub, "shop8/api-1")
	src := "AuthorizationPolicy shop8/allow-front"
	if a, n := cp.Hub.Applied(src, 1); a != 1 || n != 1 {
		t.Fatalf("Applied(%s) = %d of %d before the relabel, want 1 of 1", src, a, n)
	}

	var p corev1.Pod
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: "shop8", Name: "api-1"}, &p); err != nil {
		t.Fatal(err)
	}
	p.Labels["app"] = "retired"
	if err := env.Client.Update(context.Background(), &p); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "api-1 acked a snapshot without the policy", func() bool {
		s, _ := state(cp.Hub, "shop8/api-1")
		_, n := cp.Hub.Applied(src, 1)
		return n == 0 && s.Acked == s.Sent && len(api.Versions()) == 2
	})
}
