package configserver

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/configserver/fakeproxy"
	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
)

// sameSnapshot checks that a proxy that applies deltas holds exactly what
// one sent whole snapshots holds (both fake proxies keep the snapshot
// decoded and re-encoded, so equal snapshots have equal bytes).
func sameSnapshot(t *testing.T, deltas, full *fakeproxy.Client) {
	t.Helper()
	if deltas.Last() != full.Last() || !bytes.Equal(deltas.Snapshot(), full.Snapshot()) {
		t.Errorf("the proxy applying deltas holds %s:\n%s\nthe one sent full snapshots %s:\n%s",
			deltas.Last(), deltas.Snapshot(), full.Last(), full.Snapshot())
	}
}

// converged waits until both proxies acked the same new version.
func converged(t *testing.T, h *Hub, what string, a, b *fakeproxy.Client, podA, podB, old string) {
	t.Helper()
	waitUntil(t, what, func() bool {
		sa, _ := state(h, podA)
		sb, _ := state(h, podB)
		return sa.Acked != old && sa.Acked == sa.Sent && sb.Acked == sa.Acked && sb.Sent == sb.Acked &&
			a.Last() == sa.Acked && b.Last() == sa.Acked
	})
}

func TestDeltasAfterChanges(t *testing.T) {
	shopFixture(t, "shop10", "front10")
	cp := startControlPlane(t, "127.0.0.1:0")
	// Replicas with equal views: one accepts deltas, one is an older proxy.
	web1 := cp.proxy(t, "front10", "web-1", "web")
	web1.Deltas, web1.KeepSnapshot = true, true
	web2 := cp.proxy(t, "front10", "web-2", "web")
	web2.KeepSnapshot = true
	run(t, web1)
	run(t, web2)
	v1 := acked(t, cp.Hub, "front10/web-1").Acked
	acked(t, cp.Hub, "front10/web-2")
	if web1.DeltasReceived() != 0 {
		t.Fatalf("a proxy that holds nothing was sent a delta")
	}
	sameSnapshot(t, web1, web2)

	src := "HTTPRoute front10/backend"
	gen := setWeights(t, "front10", "backend", 30, 70)
	converged(t, cp.Hub, "both proxies acked the new weights", web1, web2, "front10/web-1", "front10/web-2", v1)
	if web1.DeltasReceived() != 1 || web2.DeltasReceived() != 0 {
		t.Errorf("deltas received: %d by the proxy that accepts them (want 1), %d by the old one (want 0)", web1.DeltasReceived(), web2.DeltasReceived())
	}
	sameSnapshot(t, web1, web2)
	if a, n := cp.Hub.Applied(src, gen); a != 2 || n != 2 {
		t.Errorf("Applied(%s, %d) = %d of %d after a delta, want 2 of 2", src, gen, a, n)
	}
	if r := cp.Hub.Report(); r.Stale != 0 || r.Connected != 2 {
		t.Errorf("Report = %+v, want 2 connected, none stale", r)
	}

	// A Service added, then removed: both travel as deltas.
	v2 := web1.Last()
	create(t, service("shop10", "extra", map[string]string{"app": "extra"}))
	converged(t, cp.Hub, "both proxies acked the new Service", web1, web2, "front10/web-1", "front10/web-2", v2)
	sameSnapshot(t, web1, web2)
	if !bytes.Contains(web1.Snapshot(), []byte(`"name":"extra"`)) {
		t.Errorf("the new Service is not in the snapshot: %s", web1.Snapshot())
	}
	v3 := web1.Last()
	if err := env.Client.Delete(context.Background(), service("shop10", "extra", nil)); err != nil {
		t.Fatal(err)
	}
	converged(t, cp.Hub, "both proxies acked the removal", web1, web2, "front10/web-1", "front10/web-2", v3)
	sameSnapshot(t, web1, web2)
	if web1.Last() != v2 {
		t.Errorf("after removing the Service again the version is %s, want %s as before it was added", web1.Last(), v2)
	}
	if n := web1.DeltasReceived(); n != 3 {
		t.Errorf("%d deltas received, want 3", n)
	}
	if n := testutil.ToFloat64(cp.Hub.Metrics.deltasSent); n != 3 {
		t.Errorf("deltas sent metric = %v, want 3", n)
	}
}

func TestRejectedDeltaIsAnsweredWithFullSnapshot(t *testing.T) {
	shopFixture(t, "shop11", "front11")
	cp := startControlPlane(t, "127.0.0.1:0")
	web1 := cp.proxy(t, "front11", "web-1", "web")
	web1.Deltas, web1.KeepSnapshot = true, true
	var n atomic.Int32
	// The second response (the delta) is refused once.
	web1.Reject = func(string) string {
		if n.Add(1) == 2 {
			return "test: refused"
		}
		return ""
	}
	web2 := cp.proxy(t, "front11", "web-2", "web")
	web2.KeepSnapshot = true
	run(t, web1)
	run(t, web2)
	v1 := acked(t, cp.Hub, "front11/web-1").Acked
	acked(t, cp.Hub, "front11/web-2")

	setWeights(t, "front11", "backend", 20, 80)
	converged(t, cp.Hub, "both proxies acked the new weights", web1, web2, "front11/web-1", "front11/web-2", v1)
	v2 := web1.Last()
	if got := web1.Versions(); !slices.Equal(got, []string{v1, v2, v2}) || web1.DeltasReceived() != 1 {
		t.Errorf("received %v with %d deltas; want %s, then %s as a delta (refused) and again whole", got, web1.DeltasReceived(), v1, v2)
	}
	sameSnapshot(t, web1, web2)
	if s, _ := state(cp.Hub, "front11/web-1"); s.Error != "" {
		t.Errorf("the full snapshot's ack did not clear the error: %+v", s)
	}
}

// runFor runs c until the returned stop is called.
func runFor(c *fakeproxy.Client) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	return func() { cancel(); <-done }
}

func TestReconnectWithOlderVersion(t *testing.T) {
	shopFixture(t, "shop12", "front12")
	cp := startControlPlane(t, "127.0.0.1:0")
	addr := cp.Addr
	web1 := cp.proxy(t, "front12", "web-1", "web")
	web1.Deltas, web1.KeepSnapshot = true, true
	web2 := cp.proxy(t, "front12", "web-2", "web")
	web2.KeepSnapshot = true
	stop := runFor(web1)
	run(t, web2)
	v1 := acked(t, cp.Hub, "front12/web-1").Acked
	acked(t, cp.Hub, "front12/web-2")

	// web-1 is away while the route changes; back, it says it holds v1,
	// which this replica knows: it is sent a delta.
	stop()
	waitUntil(t, "web-1 gone", func() bool { _, ok := state(cp.Hub, "front12/web-1"); return !ok })
	setWeights(t, "front12", "backend", 40, 60)
	waitUntil(t, "web-2 acked the change", func() bool { s, _ := state(cp.Hub, "front12/web-2"); return s.Acked != v1 && s.Acked == s.Sent })
	stop = runFor(web1)
	converged(t, cp.Hub, "web-1 caught up", web1, web2, "front12/web-1", "front12/web-2", v1)
	if web1.DeltasReceived() != 1 || len(web1.Versions()) != 2 {
		t.Errorf("after reconnecting with %s: %d responses, %d deltas; want one delta", v1, len(web1.Versions()), web1.DeltasReceived())
	}
	sameSnapshot(t, web1, web2)

	// A restarted replica knows no base: a proxy that holds a version older
	// than the current one is sent a full snapshot.
	v2 := web1.Last()
	stop()
	waitUntil(t, "web-1 gone", func() bool { _, ok := state(cp.Hub, "front12/web-1"); return !ok })
	cp.Stop()
	cp2 := startControlPlane(t, addr)
	setWeights(t, "front12", "backend", 45, 55)
	waitUntil(t, "web-2 acked the change", func() bool {
		s, _ := state(cp2.Hub, "front12/web-2")
		return s.Acked != "" && s.Acked != v2 && s.Acked == s.Sent
	})
	stop = runFor(web1)
	defer stop()
	converged(t, cp2.Hub, "web-1 caught up after the restart", web1, web2, "front12/web-1", "front12/web-2", v2)
	if web1.DeltasReceived() != 1 || len(web1.Versions()) != 3 {
		t.Errorf("after reconnecting to a restarted replica with %s: %d responses, %d deltas; want one more full snapshot", v2, len(web1.Versions()), web1.DeltasReceived())
	}
	sameSnapshot(t, web1, web2)
}

func TestUnansweredResponseDoesNotHoldBackTheNext(t *testing.T) {
	shopFixture(t, "shop13", "front13")
	cp := startControlPlaneWith(t, "127.0.0.1:0", func(h *Hub) { h.AckTimeout = 200 * time.Millisecond })
	conn, err := grpc.NewClient(cp.Addr, grpc.WithTransportCredentials(credentials.NewTLS(workloadTLS(t, "front13", "web"))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stream, err := meshapiv1.NewConfigClient(conn).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hello := &meshapiv1.Hello{PodName: "web-1", PodNamespace: "front13", AcceptsDeltas: true}
	if err := stream.Send(&meshapiv1.ConfigRequest{Kind: &meshapiv1.ConfigRequest_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	// This proxy never answers. The next change still reaches it, after the
	// ack timeout, and whole: no ack said which snapshot it holds.
	setWeights(t, "front13", "backend", 60, 40)
	second, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if second.GetVersion() == first.GetVersion() || len(second.GetSnapshot()) == 0 || len(second.GetDelta()) != 0 {
		t.Errorf("after %s went unanswered, got version %s with a %d-byte snapshot and a %d-byte delta; want a new full snapshot",
			first.GetVersion(), second.GetVersion(), len(second.GetSnapshot()), len(second.GetDelta()))
	}
}

func TestPolicyChangeAsDelta(t *testing.T) {
	shopFixture(t, "shop14", "front14")
	create(t, pod("shop14", "api-2", "api", true, map[string]string{"app": "backend"}))
	cp := startControlPlane(t, "127.0.0.1:0")
	api1 := cp.proxy(t, "shop14", "api-1", "api")
	api1.Deltas, api1.KeepSnapshot = true, true
	api2 := cp.proxy(t, "shop14", "api-2", "api")
	api2.KeepSnapshot = true
	run(t, api1)
	run(t, api2)
	v1 := acked(t, cp.Hub, "shop14/api-1").Acked
	acked(t, cp.Hub, "shop14/api-2")

	ap := &meshv1alpha1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop14", Name: "allow-front"},
		Spec: meshv1alpha1.AuthorizationPolicySpec{
			TargetRef: gatewayv1.LocalPolicyTargetReference{Group: "", Kind: "Service", Name: "backend"},
			Action:    meshv1alpha1.ActionAllow,
			Rules:     []meshv1alpha1.AuthorizationRule{{From: []meshv1alpha1.AuthorizationSource{{Namespaces: []string{"front14"}}}}},
		},
	}
	create(t, ap)
	converged(t, cp.Hub, "both acked the policy", api1, api2, "shop14/api-1", "shop14/api-2", v1)
	if api1.DeltasReceived() != 1 || !bytes.Contains(api1.Snapshot(), []byte("shop14/allow-front")) {
		t.Errorf("%d deltas received; snapshot %s; want the policy by a delta", api1.DeltasReceived(), api1.Snapshot())
	}
	sameSnapshot(t, api1, api2)
	if a, n := cp.Hub.Applied("AuthorizationPolicy shop14/allow-front", ap.Generation); a != 2 || n != 2 {
		t.Errorf("Applied = %d of %d, want 2 of 2", a, n)
	}
}

func TestTrustBundleChangeReachesProxies(t *testing.T) {
	shopFixture(t, "shop15", "front15")
	src := newBundleSource(t)
	cp := startControlPlaneWith(t, "127.0.0.1:0", func(h *Hub) {
		h.BundleInterval = 20 * time.Millisecond
		h.TrustBundle = src.get
	})
	web1 := cp.proxy(t, "front15", "web-1", "web")
	web1.Deltas = true
	web2 := cp.proxy(t, "front15", "web-2", "web")
	run(t, web1)
	run(t, web2)
	v1 := acked(t, cp.Hub, "front15/web-1").Acked
	acked(t, cp.Hub, "front15/web-2")

	// A rotation adds a root: running proxies are sent it with the
	// snapshot they hold (an empty delta to one that accepts deltas).
	rotated := src.rotate()
	waitUntil(t, "both proxies hold the new bundle", func() bool {
		return bytes.Equal(web1.TrustBundle(), rotated) && bytes.Equal(web2.TrustBundle(), rotated)
	})
	if got := web1.Versions(); !slices.Equal(got, []string{v1, v1}) || web1.DeltasReceived() != 1 {
		t.Errorf("web-1 received %v with %d deltas; want %s again as a delta", got, web1.DeltasReceived(), v1)
	}
	if got := web2.Versions(); !slices.Equal(got, []string{v1, v1}) || web2.DeltasReceived() != 0 {
		t.Errorf("web-2 received %v with %d deltas; want %s again whole", got, web2.DeltasReceived(), v1)
	}
	waitUntil(t, "nothing stale", func() bool { r := cp.Hub.Report(); return r.Stale == 0 && r.Connected == 2 })
}

// TestTrustBundleChangedWhileAwayReachesProxy: a proxy reconnects holding
// the current snapshot, but the trust bundle changed while its stream was
// down (the control plane restarted with a rotated bundle). Its Hello says
// which bundle it holds, so it is sent the snapshot again with the new
// bundle; with the bundle unchanged it would be sent nothing
// (TestRestartReconnectAndConverge).
func TestTrustBundleChangedWhileAwayReachesProxy(t *testing.T) {
	shopFixture(t, "shop16", "front16")
	src := newBundleSource(t)
	bundle := src.get()
	withBundle := func(h *Hub) { h.TrustBundle = src.get }
	cp := startControlPlaneWith(t, "127.0.0.1:0", withBundle)
	addr := cp.Addr
	web := cp.proxy(t, "front16", "web-1", "web")
	web.Deltas = true
	run(t, web)
	v1 := acked(t, cp.Hub, "front16/web-1").Acked
	if !bytes.Equal(web.TrustBundle(), bundle) {
		t.Fatal("the proxy did not receive the trust bundle")
	}

	cp.Stop()
	rotated := src.rotate()
	cp2 := startControlPlaneWith(t, addr, withBundle)
	waitUntil(t, "the proxy holds the new bundle", func() bool { return bytes.Equal(web.TrustBundle(), rotated) })
	if got := web.Versions(); !slices.Equal(got, []string{v1, v1}) {
		t.Errorf("the proxy received %v; want %s again, with the new bundle", got, v1)
	}
	if s := acked(t, cp2.Hub, "front16/web-1"); s.Acked != v1 {
		t.Errorf("acked %q after the reconnect, want %s", s.Acked, v1)
	}
}

// bundleSource is a trust bundle the tests rotate under a running hub.
type bundleSource struct {
	mu     sync.Mutex
	bundle []byte
}

func newBundleSource(t *testing.T) *bundleSource {
	return &bundleSource{bundle: issuer(t).BundlePEM()}
}

func (b *bundleSource) get() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bundle
}

// rotate adds a second "root" (a comment is enough for the hash) and
// returns the new bundle.
func (b *bundleSource) rotate() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bundle = append(append([]byte{}, b.bundle...), "# a second root\n"...)
	return b.bundle
}
