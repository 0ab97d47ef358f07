package configserver

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func statusCM(t *testing.T, rev string, entries map[string]statusEntry) *corev1.ConfigMap {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: StatusConfigMapPrefix + rev}, Data: map[string]string{}}
	for k, e := range entries {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		cm.Data[k] = string(b)
	}
	return cm
}

// The status writer's count adds up every other replica's fresh report, of
// its own revision and of others, and leaves out its own published entry
// (the hub is fresher) and reports of replicas that stopped writing.
func TestMeshCounterAddsOtherReplicas(t *testing.T) {
	now := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	fresh, old := now.Add(-10*time.Second).Format(time.RFC3339), now.Add(-5*time.Minute).Format(time.RFC3339)
	src := "HTTPRoute shop/web"
	acks := func(total int, acked map[int64]int) Report {
		return Report{Sources: map[string]SourceAcks{src: {Total: total, Acked: acked}}}
	}
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		statusCM(t, "v1-1-0", map[string]statusEntry{
			"me.json":      {Report: acks(100, map[int64]int{3: 100}), Updated: fresh}, // this replica: not counted twice
			"peer.json":    {Report: acks(4, map[int64]int{3: 1, 2: 2}), Updated: fresh},
			"gone.json":    {Report: acks(50, map[int64]int{3: 50}), Updated: old},
			"garbage.json": {Updated: "yesterday"},
		}),
		statusCM(t, "v1-0-0", map[string]statusEntry{
			"old-rev.json": {Report: acks(3, map[int64]int{3: 3}), Updated: fresh},
		}),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "unrelated"}, Data: map[string]string{"x.json": `{"sources":{}}`}},
	).Build()
	c := &MeshCounter{Hub: &Hub{}, Reader: reader, Namespace: "weft-system", Revision: "v1-1-0", Replica: "me", Now: func() time.Time { return now }}
	if a, n := c.Applied(src, 3); a != 4 || n != 7 {
		t.Errorf("Applied(gen 3) = %d of %d, want 4 of 7 (peer 1 of 4, old revision 3 of 3)", a, n)
	}
	if a, n := c.Applied(src, 2); a != 6 || n != 7 {
		t.Errorf("Applied(gen 2) = %d of %d, want 6 of 7", a, n)
	}
	if a, n := c.Applied("HTTPRoute shop/other", 1); a != 0 || n != 0 {
		t.Errorf("an unknown source: %d of %d", a, n)
	}

	// A replica's new report is read again (its resourceVersion changed).
	var cm corev1.ConfigMap
	if err := reader.Get(context.Background(), client.ObjectKey{Namespace: "weft-system", Name: StatusConfigMapPrefix + "v1-0-0"}, &cm); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(statusEntry{Report: acks(5, map[int64]int{3: 5}), Updated: fresh})
	cm.Data["old-rev.json"] = string(b)
	if err := reader.Update(context.Background(), &cm); err != nil {
		t.Fatal(err)
	}
	if a, n := c.Applied(src, 3); a != 6 || n != 9 {
		t.Errorf("after an update: %d of %d, want 6 of 9", a, n)
	}
}

func TestReportSourcesCompare(t *testing.T) {
	a := Report{Sources: map[string]SourceAcks{"x": {Total: 2, Acked: map[int64]int{1: 2}}}}
	b := Report{Sources: map[string]SourceAcks{"x": {Total: 2, Acked: map[int64]int{1: 1, 2: 1}}}}
	if sameReport(a, b) || !sameReport(a, a) {
		t.Error("sameReport ignores the per-source counts")
	}
}

// BundleChanged adopts a new trust bundle at once, without waiting for the
// timer (the issuer store calls it when it loads a new issuer).
func TestBundleChangedAdoptsTheNewBundle(t *testing.T) {
	var mu sync.Mutex
	bundle := []byte("old roots")
	h := &Hub{TrustBundle: func() []byte { mu.Lock(); defer mu.Unlock(); return bundle }}
	old := h.wantBundle()
	mu.Lock()
	bundle = []byte("old and new roots")
	mu.Unlock()
	if h.wantBundle() != old {
		t.Fatal("the bundle to hold changed before anyone said so")
	}
	h.BundleChanged()
	if _, sum := h.bundle(); h.wantBundle() != sum || sum == old {
		t.Error("BundleChanged did not adopt the new bundle")
	}
}
