package configserver

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/weftmesh/weft/controlplane/compiler"
	"github.com/weftmesh/weft/internal/scheme"
)

// TestNamespacesShareServiceEncodings: a service that compiles to the same
// bytes for several namespaces is held once, also when one namespace is
// recompiled later; a namespace whose own route changes the service gets
// its own bytes; and every namespace's document is still exactly its
// Outbound.
func TestNamespacesShareServiceEncodings(t *testing.T) {
	objs := []client.Object{
		namespace("a"), namespace("b"), namespace("c"), namespace("shop"),
		service("shop", "web", map[string]string{"app": "web"}),
		service("shop", "web-v1", map[string]string{"app": "web", "v": "1"}),
		service("shop", "web-v2", map[string]string{"app": "web", "v": "2"}),
		service("shop", "db", map[string]string{"app": "db"}),
		endpointSlice("shop", "web", "10.0.0.1"), endpointSlice("shop", "db", "10.0.0.2"),
		// A consumer route: only clients in namespace a see it.
		route("a", "canary", "shop", "web", 90, 10),
	}
	w := loadWorld(t, objs...)
	all := map[string]bool{"a": true, "b": true, "c": true}
	outs, err := encodeNamespaces(w, all, nil, newSharedServices(nil))
	if err != nil {
		t.Fatal(err)
	}
	checkDocuments(t, w, outs)
	same := func(x, y json.RawMessage) bool { return len(x) > 0 && len(y) > 0 && &x[0] == &y[0] }
	web := func(ns string) json.RawMessage { return serviceJSON(t, outs[ns], "shop/web") }
	db := func(ns string) json.RawMessage { return serviceJSON(t, outs[ns], "shop/db") }
	if !same(web("b"), web("c")) || !same(db("a"), db("b")) || !same(db("b"), db("c")) {
		t.Error("equal service encodings of different namespaces are separate copies")
	}
	if same(web("a"), web("b")) || string(web("a")) == string(web("b")) {
		t.Error("namespace a's shop/web (with its own route) shares the other namespaces' bytes")
	}

	// Namespaces compiled one at a time as their first proxy connects share
	// too, with each other and with those compiled before.
	h := &Hub{world: w, outbound: map[string]*nsOutbound{"a": outs["a"]}, shared: newSharedServices(map[string]*nsOutbound{"a": outs["a"]})}
	lazyB, err := h.outboundFor(w, "b")
	if err != nil {
		t.Fatal(err)
	}
	lazyC, err := h.outboundFor(w, "c")
	if err != nil {
		t.Fatal(err)
	}
	checkDocuments(t, w, map[string]*nsOutbound{"b": lazyB, "c": lazyC})
	if !same(serviceJSON(t, lazyB, "shop/web"), serviceJSON(t, lazyC, "shop/web")) || !same(serviceJSON(t, lazyC, "shop/db"), db("a")) {
		t.Error("namespaces compiled as proxies connect do not share equal service encodings")
	}

	// The route goes away: only namespace a is recompiled, and now shares
	// everything with b and c, which kept their encodings.
	w2 := loadWorld(t, objs[:len(objs)-1]...)
	outs2, err := encodeNamespaces(w2, map[string]bool{"a": true, "b": false, "c": false}, outs, newSharedServices(outs))
	if err != nil {
		t.Fatal(err)
	}
	checkDocuments(t, w2, outs2)
	if outs2["b"] != outs["b"] {
		t.Error("namespace b was not kept")
	}
	if !same(serviceJSON(t, outs2["a"], "shop/web"), web("b")) || !same(serviceJSON(t, outs2["a"], "shop/db"), db("b")) {
		t.Error("the recompiled namespace does not share the kept namespaces' encodings")
	}
}

func loadWorld(t *testing.T, objs ...client.Object) *compiler.World {
	t.Helper()
	r := fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(objs...).Build()
	w, err := compiler.Load(context.Background(), r, compiler.Mesh{TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func checkDocuments(t *testing.T, w *compiler.World, outs map[string]*nsOutbound) {
	t.Helper()
	for ns, o := range outs {
		got, err := o.enc.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(w.Outbound(ns))
		if string(got) != string(want) {
			t.Errorf("namespace %s: the document is\n%s\nwant\n%s", ns, got, want)
		}
		if o.sum != o.enc.Sum() {
			t.Errorf("namespace %s: the recorded hash is not the document's", ns)
		}
	}
}

func serviceJSON(t *testing.T, o *nsOutbound, key string) json.RawMessage {
	t.Helper()
	for _, s := range o.enc.Services {
		if s.Key == key {
			return s.JSON
		}
	}
	t.Fatalf("no service %s", key)
	return nil
}

// TestWorldHoldsTheCachedObjects: a World loaded from an informer cache
// points at the cache's objects instead of holding a copy of each (a
// thousand Pods and Services copied are megabytes per World).
func TestWorldHoldsTheCachedObjects(t *testing.T) {
	create(t, namespace("worldcache"), service("worldcache", "web", map[string]string{"app": "web"}),
		pod("worldcache", "web-1", "web", true, map[string]string{"app": "web"}))
	ctx, c := startCache(t)
	w, err := compiler.Load(ctx, c, compiler.Mesh{TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	// Load starts the informers it needs; load again once they synced.
	waitUntil(t, "the informers synced", func() bool { return c.WaitForCacheSync(ctx) })
	if w, err = compiler.Load(ctx, c, compiler.Mesh{TrustDomain: "cluster.local"}); err != nil {
		t.Fatal(err)
	}
	inf, err := c.GetInformer(ctx, &corev1.Pod{})
	if err != nil {
		t.Fatal(err)
	}
	item, ok, err := inf.(interface{ GetStore() toolscache.Store }).GetStore().GetByKey("worldcache/web-1")
	if err != nil || !ok {
		t.Fatalf("the pod is not in the cache: %v", err)
	}
	if got := w.Pod("worldcache", "web-1"); got != item.(*corev1.Pod) {
		t.Errorf("the World holds %p, the cache %p: a copy", got, item)
	}
}

// TestRecompileWhileNamespacesCompile: a compilation reads the previous
// namespaces' configs while proxies of new namespaces add theirs to the
// installed ones (run with -race).
func TestRecompileWhileNamespacesCompile(t *testing.T) {
	// Namespaces need not exist for their outbound config: every loop
	// below compiles a new one.
	create(t, namespace("recompile"), service("recompile", "web", map[string]string{"app": "web"}))
	ctx, c := startCache(t)
	h := &Hub{Cache: c, Mesh: compiler.Mesh{TrustDomain: "cluster.local"}}
	h.init()
	if err := h.recompile(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 10 {
			if err := h.recompile(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-done:
			return
		default:
		}
		h.mu.Lock()
		w := h.world
		h.mu.Unlock()
		if _, err := h.outboundFor(w, fmt.Sprintf("client-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
}

// startCache starts an informer cache on the test API server, stopped when
// the test ends.
func startCache(t *testing.T) (context.Context, cache.Cache) {
	t.Helper()
	c, err := cache.New(env.Config, cache.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go c.Start(ctx)
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	return ctx, c
}
