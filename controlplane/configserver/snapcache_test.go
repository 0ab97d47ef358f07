package configserver

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/controlplane/compiler"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

func TestSnapCacheSharesEqualViewsAndStaysBounded(t *testing.T) {
	w := &compiler.World{Mesh: compiler.Mesh{TrustDomain: "cluster.local"}}
	enc, err := compiler.EncodeOutbound(meshconfig.Outbound{})
	if err != nil {
		t.Fatal(err)
	}
	out := &nsOutbound{enc: enc}
	mk := func(ns, name, sa string) *view {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{ServiceAccountName: sa}}
		v, err := newView(w, pod, out)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// Two replicas of one Deployment: same identity, same ports.
	a1, a2, b := mk("shop", "web-1", "web"), mk("shop", "web-2", "web"), mk("shop", "api-1", "api")
	if a1.fp != a2.fp || a1.fp == b.fp {
		t.Fatalf("fingerprints: replicas equal %v, other identity differs %v", a1.fp == a2.fp, a1.fp != b.fp)
	}
	c := newSnapCache(1) // room for the newest entry only
	s1, err := c.get(a1)
	if err != nil {
		t.Fatal(err)
	}
	if s2, _ := c.get(a2); s2 != s1 {
		t.Errorf("replicas with equal views got two builds")
	}
	sb, _ := c.get(b)
	if sb == s1 || sb.Version == s1.Version {
		t.Errorf("a different identity got the same snapshot")
	}
	if len(c.byKey) != 1 || c.bytes != len(sb.JSON) {
		t.Errorf("cache holds %d entries, %d bytes; want only the newest (%d bytes)", len(c.byKey), c.bytes, len(sb.JSON))
	}
	if s3, _ := c.get(a1); s3 == s1 || s3.Version != s1.Version {
		t.Errorf("an evicted view must be rebuilt, to the same version")
	}
}

func TestSnapCacheForgetsIdleEntries(t *testing.T) {
	c := newSnapCache(1 << 20)
	c.idle = 10 * time.Millisecond
	build := func() (*compiler.Snapshot, error) { return &compiler.Snapshot{Version: "v", JSON: []byte("{}")}, nil }
	if _, err := c.getOrBuild(cacheKey{fp: [32]byte{1}}, build); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the idle entry is forgotten", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.byKey) == 0 && c.bytes == 0 && c.sweeper == nil
	})
	// And the cache still works after.
	if s, err := c.getOrBuild(cacheKey{fp: [32]byte{2}}, build); err != nil || s.Version != "v" {
		t.Fatalf("get after a sweep: %v, %v", s, err)
	}
}
