// Package configserver serves the meshapi Config stream: it authenticates each
// proxy by its workload certificate, watches the cluster through an informer
// cache, recompiles (with controlplane/compiler) after coalesced bursts of
// changes, sends each proxy a snapshot only when its own view changed, and
// tracks what every proxy acknowledged for status and metrics.
//
// It never writes routing objects or their status (controlplane/status does)
// and never signs certificates (controlplane/identity does).
package configserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/compiler"
)

// DefaultWindow is how long the hub waits after a change for more changes
// before it recompiles, when the change follows the last compilation within
// a window (a burst): long enough to fold a rollout's burst of EndpointSlice
// updates into one compilation, well under the 50 ms budget. A change after
// a quiet window is compiled at once.
const DefaultWindow = 20 * time.Millisecond

// Hub owns the compiled state and the set of connected proxies.
type Hub struct {
	// Cache is watched and read; Start registers the informers.
	Cache cache.Cache
	// APIReader, if set, is asked for a pod the cache does not hold yet (a
	// proxy usually connects seconds after its pod was created).
	APIReader client.Reader
	Mesh      compiler.Mesh
	Log       logr.Logger
	Metrics   *Metrics
	// Window is the coalescing window (DefaultWindow when zero).
	Window time.Duration
	// TrustBundle returns the current trust bundle PEM, sent with every
	// snapshot; nil sends none. When it changes (a trust-anchor rotation)
	// every proxy is sent its snapshot again with the new bundle.
	TrustBundle func() []byte
	// BundleInterval is how often TrustBundle is checked for a change (2s
	// when zero).
	BundleInterval time.Duration
	// SnapshotCacheBytes bounds the snapshots kept to share between proxies
	// with equal views (16 MiB when zero).
	SnapshotCacheBytes int
	// MaxInFlight bounds the snapshots sent and not yet acknowledged, across
	// all proxies (16 when zero). gRPC accepts a whole message into a
	// stream's buffer whatever the peer's flow-control window, so without
	// this bound a thousand slow proxies would each pin a snapshot of
	// megabytes in memory; acks are the flow control.
	MaxInFlight int
	// AckTimeout frees the in-flight slot of a proxy that does not ack (10s
	// when zero).
	AckTimeout time.Duration

	initOnce sync.Once
	// bundleSum is the hash of the trust bundle proxies are to hold.
	bundleSum atomic.Pointer[[32]byte]
	kick      chan struct{}
	changed   chan struct{}
	sendSem   chan struct{}
	ready     chan struct{}
	snaps     *snapCache
	// deltas shares built deltas like snaps shares snapshots.
	deltas *snapCache
	// bases remembers recently acknowledged snapshots by version, so that
	// a proxy reconnecting with one of them gets a delta.
	bases *baseCache
	// versions caches the version of each view fingerprint: computing it
	// hashes the namespace's whole outbound config.
	versions versionCache

	mu       sync.Mutex
	world    *compiler.World
	outbound map[string]*nsOutbound
	// shared indexes the service encodings of outbound, for namespaces
	// compiled later against the same world.
	shared *sharedServices
	// compiling are the namespaces outboundFor is compiling.
	compiling map[string]*flight
	proxies   map[*proxy]struct{}
	dirty     dirty
}

// nsOutbound is one namespace's encoded outbound config with its hash, so a
// recompilation that changes nothing for a namespace keeps the same pointer.
type nsOutbound struct {
	enc *compiler.EncodedOutbound
	sum [32]byte
	// outline is what a delta against this config needs of it.
	outline *outline
}

// view is what one proxy should hold: enough to build its snapshot when it
// is sent (snapshots are built at send time and dropped after, since with a
// thousand services each is megabytes) and to answer Applied.
type view struct {
	world   *compiler.World
	pod     *corev1.Pod
	out     *nsOutbound
	in      *inboundPart
	carried carried
	// fp changes exactly when the snapshot's content changes.
	fp [32]byte
}

// carried is which routes, splits and policies a snapshot applies, at which
// generation. The outbound part is shared by every proxy of a namespace.
type carried struct {
	out      map[string]int64
	policies map[string]int64
}

func (c *carried) generation(source string) (int64, bool) {
	if c == nil {
		return 0, false
	}
	if g, ok := c.out[source]; ok {
		return g, true
	}
	g, ok := c.policies[source]
	return g, ok
}

func (h *Hub) init() {
	h.initOnce.Do(func() {
		h.kick = make(chan struct{}, 1)
		h.changed = make(chan struct{}, 1)
		n := h.MaxInFlight
		if n <= 0 {
			n = 16
		}
		h.sendSem = make(chan struct{}, n)
		if h.AckTimeout <= 0 {
			h.AckTimeout = 10 * time.Second
		}
		cacheBytes := h.SnapshotCacheBytes
		if cacheBytes <= 0 {
			cacheBytes = 16 << 20
		}
		h.snaps = newSnapCache(cacheBytes)
		h.deltas = newSnapCache(cacheBytes / 4)
		h.bases = newBaseCache(maxBases)
		h.ready = make(chan struct{})
		h.outbound = map[string]*nsOutbound{}
		h.proxies = map[*proxy]struct{}{}
		if h.Metrics == nil {
			h.Metrics = NewMetrics(nil)
		}
	})
}

// watched are the kinds whose changes trigger a recompilation.
func watched() []client.Object {
	return []client.Object{
		&corev1.Service{}, &discoveryv1.EndpointSlice{}, &corev1.Pod{}, &corev1.Namespace{},
		&gatewayv1.HTTPRoute{}, &meshv1alpha1.TrafficSplit{}, &meshv1alpha1.AuthorizationPolicy{},
	}
}

// Start registers the informers, waits for the cache to sync, compiles once,
// and then recompiles after every burst of changes until ctx ends. The cache
// must be started separately (a manager does it). It is a
// manager.Runnable; every replica runs it.
func (h *Hub) Start(ctx context.Context) error {
	h.init()
	for _, obj := range watched() {
		changed := h.changeFunc(obj)
		handler := toolscache.ResourceEventHandlerFuncs{
			AddFunc: changed,
			// Both: a route that stops being a consumer route affects
			// others than its new self does.
			UpdateFunc: func(o, n any) {
				if sameForMesh(o, n) {
					return
				}
				changed(o)
				changed(n)
			},
			DeleteFunc: changed,
		}
		inf, err := h.Cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("watching %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("watching %T: %w", obj, err)
		}
	}
	if !h.Cache.WaitForCacheSync(ctx) {
		return fmt.Errorf("the informer cache did not sync: %w", context.Cause(ctx))
	}
	// Until a first compilation succeeds, proxies wait in Stream; a failure
	// here (the cache read failing) is retried rather than ending the
	// process.
	for {
		err := h.recompile(ctx)
		if err == nil {
			break
		}
		h.Log.Error(err, "The first compilation failed; retrying")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	close(h.ready)
	h.Log.Info("Config hub ready")
	go h.watchBundle(ctx)
	window := h.Window
	if window <= 0 {
		window = DefaultWindow
	}
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-h.kick:
		}
		// A change after a quiet window is compiled at once: one route
		// change reaches its proxies a window sooner. Otherwise a burst is
		// under way: wait out the window so that it becomes one
		// compilation; kicks that arrive meanwhile are folded in by
		// draining after the wait.
		if time.Since(last) < window {
			t := time.NewTimer(window)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		select {
		case <-h.kick:
		default:
		}
		if err := h.recompile(ctx); err != nil {
			// A failed read of the cache is transient; proxies keep their last
			// snapshot and the next change (or this retry) compiles again.
			h.Log.Error(err, "Compiling the mesh configuration failed; retrying")
			time.AfterFunc(time.Second, h.Kick)
		}
		last = time.Now()
	}
}

// dirty is what the changes since the last compilation can have altered,
// so that a compilation redoes only that. What each part of a snapshot
// reads (compiler.World): a proxy's inbound config reads its own Pod, the
// Services, AuthorizationPolicies and Namespaces, and the mesh settings; a
// namespace's outbound config reads Services, EndpointSlices, Pods,
// HTTPRoutes, TrafficSplits and the mesh settings, and a consumer HTTPRoute
// (one whose Service parents are all in other namespaces) only its own
// namespace's.
type dirty struct {
	inboundAll  bool
	pods        map[string]bool
	outboundAll bool
	outboundNS  map[string]bool
}

func (d *dirty) all() { d.inboundAll, d.outboundAll = true, true }

func (d *dirty) inbound(pod string) bool { return d.inboundAll || d.pods[pod] }
func (d *dirty) outbound(ns string) bool { return d.outboundAll || d.outboundNS[ns] }
func (d *dirty) markPod(key string)      { d.pods = mark(d.pods, key) }
func (d *dirty) markNamespace(ns string) { d.outboundNS = mark(d.outboundNS, ns) }
func mark(m map[string]bool, k string) map[string]bool {
	if m == nil {
		m = map[string]bool{}
	}
	m[k] = true
	return m
}

// changeFunc is the event handler for kind: it notes what the change can
// affect, then kicks.
func (h *Hub) changeFunc(kind client.Object) func(any) {
	note := func(f func(d *dirty)) {
		h.mu.Lock()
		f(&h.dirty)
		h.mu.Unlock()
		h.Kick()
	}
	unwrap := func(obj any) any {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			return d.Obj
		}
		return obj
	}
	switch kind.(type) {
	case *corev1.Pod:
		return func(obj any) {
			note(func(d *dirty) {
				d.outboundAll = true
				if p, ok := unwrap(obj).(*corev1.Pod); ok {
					d.markPod(p.Namespace + "/" + p.Name)
				} else {
					d.inboundAll = true
				}
			})
		}
	case *corev1.Service:
		return func(any) { note((*dirty).all) }
	case *meshv1alpha1.AuthorizationPolicy, *corev1.Namespace:
		return func(any) { note(func(d *dirty) { d.inboundAll = true }) }
	case *gatewayv1.HTTPRoute:
		return func(obj any) {
			note(func(d *dirty) {
				r, ok := unwrap(obj).(*gatewayv1.HTTPRoute)
				if ok && consumerOnly(r) {
					d.markNamespace(r.Namespace)
				} else {
					d.outboundAll = true
				}
			})
		}
	default:
		return func(any) { note(func(d *dirty) { d.outboundAll = true }) }
	}
}

// sameForMesh says whether an update leaves everything the compiler reads
// unchanged. Of a Pod that is its labels, annotations, ServiceAccount and
// container ports: the kubelet's status updates, most of a cluster's Pod
// events, then cost no compilation. Of a route, split or policy it is all
// but the status: the status writers' own updates (applied by N of M
// proxies, which move while proxies connect) must not recompile the mesh.
func sameForMesh(o, n any) bool {
	switch o.(type) {
	case *gatewayv1.HTTPRoute, *meshv1alpha1.TrafficSplit, *meshv1alpha1.AuthorizationPolicy:
		return statusOnly(o, n)
	}
	op, ok1 := o.(*corev1.Pod)
	np, ok2 := n.(*corev1.Pod)
	if !ok1 || !ok2 {
		return false
	}
	if !maps.Equal(op.Labels, np.Labels) || !maps.Equal(op.Annotations, np.Annotations) ||
		op.Spec.ServiceAccountName != np.Spec.ServiceAccountName || len(op.Spec.Containers) != len(np.Spec.Containers) {
		return false
	}
	for i := range op.Spec.Containers {
		if !reflect.DeepEqual(op.Spec.Containers[i].Ports, np.Spec.Containers[i].Ports) {
			return false
		}
	}
	return true
}

// statusOnly says whether an update of an object whose generation follows
// its spec changed at most its status.
func statusOnly(o, n any) bool {
	om, ok1 := o.(client.Object)
	nm, ok2 := n.(client.Object)
	return ok1 && ok2 && om.GetGeneration() != 0 && om.GetGeneration() == nm.GetGeneration() &&
		maps.Equal(om.GetLabels(), nm.GetLabels()) && maps.Equal(om.GetAnnotations(), nm.GetAnnotations()) &&
		(om.GetDeletionTimestamp() == nil) == (nm.GetDeletionTimestamp() == nil)
}

// consumerOnly says whether every Service parent of r is in another
// namespace than r: then r applies only to clients in r's namespace.
func consumerOnly(r *gatewayv1.HTTPRoute) bool {
	for _, p := range r.Spec.ParentRefs {
		isService := p.Group != nil && *p.Group == "" && p.Kind != nil && *p.Kind == "Service"
		if isService && (p.Namespace == nil || string(*p.Namespace) == r.Namespace) {
			return false
		}
	}
	return true
}

// Ready is closed after the first compilation.
func (h *Hub) Ready() <-chan struct{} {
	h.init()
	return h.ready
}

// Kick asks for a recompilation (changes are coalesced).
func (h *Hub) Kick() {
	h.init()
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// SetMesh replaces the mesh-wide settings (a MeshControlPlane change) and
// recompiles if they changed.
func (h *Hub) SetMesh(m compiler.Mesh) {
	h.mu.Lock()
	same := reflect.DeepEqual(h.Mesh, m)
	h.Mesh = m
	if !same {
		h.dirty.all()
	}
	h.mu.Unlock()
	if !same {
		h.Kick()
	}
}

func (h *Hub) recompile(ctx context.Context) (err error) {
	start := time.Now()
	defer func() {
		if err != nil {
			// What this compilation was to redo is still to be redone.
			h.mu.Lock()
			h.dirty.all()
			h.mu.Unlock()
		}
	}()
	h.mu.Lock()
	mesh := h.Mesh
	namespaces := map[string]bool{}
	for p := range h.proxies {
		namespaces[p.namespace] = true
	}
	// A copy: outboundFor adds namespaces to the installed map, under the
	// lock, while this compilation reads prev without it.
	prev := maps.Clone(h.outbound)
	// The index of prev's encodings, kept up to date by outboundFor.
	shared := h.shared
	// Taken before the read of the cache: a change after this point kicks
	// another compilation and is marked for it.
	d := h.dirty
	h.dirty = dirty{}
	if h.world == nil {
		d.all()
	}
	h.mu.Unlock()

	w, err := compiler.Load(ctx, h.Cache, mesh)
	if err != nil {
		return err
	}
	// A namespace whose outbound inputs did not change keeps its encoding:
	// it is what compiling the new world would give.
	for ns := range namespaces {
		if !d.outbound(ns) && prev[ns] != nil {
			namespaces[ns] = false
		}
	}
	if shared == nil {
		shared = newSharedServices(prev)
	}
	outs, err := encodeNamespaces(w, namespaces, prev, shared)
	if err != nil {
		return err
	}

	// Installing the world and listing the proxies happen under one lock:
	// a proxy registered before sees this compilation, one registered after
	// finds its view stale in add and rebuilds it.
	h.mu.Lock()
	h.world = w
	h.outbound = outs
	// Indexed again from what is installed, so that encodings only the
	// previous compilation used are not kept alive by the index.
	h.shared = newSharedServices(outs)
	proxies := make([]*proxy, 0, len(h.proxies))
	for p := range h.proxies {
		proxies = append(proxies, p)
	}
	h.mu.Unlock()

	changed := 0
	for _, p := range proxies {
		pod := w.Pod(p.namespace, p.pod)
		if pod == nil {
			// The pod is gone (or not yet cached): the proxy keeps what it
			// has until its stream ends.
			continue
		}
		out, err := h.outboundFor(w, p.namespace)
		if err != nil {
			h.Log.Error(err, "Compiling a namespace's outbound config failed", "namespace", p.namespace)
			continue
		}
		var v *view
		if prevIn := p.inbound(); prevIn != nil && !d.inbound(p.namespace+"/"+p.pod) {
			v = viewWithInbound(w, pod, out, prevIn)
		} else if v, err = newView(w, pod, out); err != nil {
			h.Log.Error(err, "Compiling a proxy's inbound config failed", "pod", p.namespace+"/"+p.pod)
			continue
		}
		if p.update(v) {
			changed++
		}
	}
	h.Metrics.compileSeconds.Observe(time.Since(start).Seconds())
	if changed > 0 {
		h.signal()
	}
	h.Log.V(1).Info("Compiled the mesh configuration", "proxies", len(proxies), "changed", changed, "duration", time.Since(start))
	return nil
}

// encodeNamespaces compiles the outbound config of the namespaces marked
// true and keeps prev for the others, one namespace per CPU at a time: the
// namespaces are independent and each is a full pass over the Services.
func encodeNamespaces(w *compiler.World, namespaces map[string]bool, prev map[string]*nsOutbound, shared *sharedServices) (map[string]*nsOutbound, error) {
	outs := make(map[string]*nsOutbound, len(namespaces))
	var mu sync.Mutex
	var firstErr error
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), max(1, len(namespaces))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ns := range work {
				o, err := encodeNamespace(w, ns, prev[ns], shared)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				outs[ns] = o
				mu.Unlock()
			}
		}()
	}
	for ns, compile := range namespaces {
		if compile {
			work <- ns
		} else {
			mu.Lock()
			outs[ns] = prev[ns]
			mu.Unlock()
		}
	}
	close(work)
	wg.Wait()
	return outs, firstErr
}

// encodeNamespace compiles and encodes one namespace's outbound config,
// keeping prev when nothing changed, and sharing the encoding of every
// service equal to one in shared.
func encodeNamespace(w *compiler.World, ns string, prev *nsOutbound, shared *sharedServices) (*nsOutbound, error) {
	enc, err := w.EncodedOutbound(ns)
	if err != nil {
		return nil, fmt.Errorf("encoding the outbound config of namespace %s: %w", ns, err)
	}
	sum := enc.Sum()
	if prev != nil && prev.sum == sum && sameSources(prev.enc.Sources, enc.Sources) {
		return prev, nil
	}
	enc.Intern(shared.intern)
	return &nsOutbound{enc: enc, sum: sum, outline: newOutline(enc)}, nil
}

// sharedServices holds one copy of each distinct encoding of a service
// across namespaces. Namespaces mostly see the same services (routes of
// their own and TrafficSplits make the difference): with a thousand
// services and ten namespaces, a copy per namespace was 6 MiB of 7.
type sharedServices struct {
	mu    sync.Mutex
	byKey map[string][]compiler.EncodedService
}

// newSharedServices indexes the services of the configs in outs (which it
// does not change: proxies may be reading them).
func newSharedServices(outs map[string]*nsOutbound) *sharedServices {
	s := &sharedServices{byKey: map[string][]compiler.EncodedService{}}
	for _, o := range outs {
		if o == nil {
			continue
		}
		for _, es := range o.enc.Services {
			s.intern(es)
		}
	}
	return s
}

// intern returns the copy of es held, adding es if there is none.
func (s *sharedServices) intern(es compiler.EncodedService) compiler.EncodedService {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.byKey[es.Key] {
		if bytes.Equal(c.JSON, es.JSON) {
			return c
		}
	}
	s.byKey[es.Key] = append(s.byKey[es.Key], es)
	return es
}

func sameSources(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func newView(w *compiler.World, pod *corev1.Pod, out *nsOutbound) (*view, error) {
	in := w.Inbound(pod)
	inJSON, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	pi := &inboundPart{sum: sha256.Sum256(inJSON), json: inJSON, policies: make(map[string]int64, len(in.Policies))}
	for _, p := range in.Policies {
		pi.policies["AuthorizationPolicy "+p.Source] = p.Generation
	}
	return viewWithInbound(w, pod, out, pi), nil
}

// inboundPart is what a view keeps of its inbound config: its encoding (a
// delta carries it when it changed; it is small), whether it changed and
// which policies it carries.
type inboundPart struct {
	sum      [32]byte
	json     []byte
	policies map[string]int64
}

func viewWithInbound(w *compiler.World, pod *corev1.Pod, out *nsOutbound, in *inboundPart) *view {
	h := sha256.New()
	fmt.Fprintf(h, "%s|%s|%s|", w.PodIdentity(pod), w.Mesh.TrustDomain, w.Mesh.MTLSMode)
	h.Write(out.sum[:])
	h.Write(in.sum[:])
	v := &view{world: w, pod: pod, out: out, in: in, carried: carried{out: out.enc.Sources, policies: in.policies}}
	copy(v.fp[:], h.Sum(nil))
	return v
}

// viewFor compiles the view of a proxy that is connecting now, from the
// current world.
func (h *Hub) viewFor(pod *corev1.Pod) (*view, error) {
	h.mu.Lock()
	w := h.world
	h.mu.Unlock()
	if w == nil {
		return nil, fmt.Errorf("the configuration is not compiled yet")
	}
	// The view keeps its pod until the next compilation: the world's, if
	// it is the same, rather than the caller's copy.
	if wp := w.Pod(pod.Namespace, pod.Name); wp != nil && wp.UID == pod.UID && wp.ResourceVersion == pod.ResourceVersion {
		pod = wp
	}
	out, err := h.outboundFor(w, pod.Namespace)
	if err != nil {
		return nil, err
	}
	return newView(w, pod, out)
}

// outboundFor returns namespace ns's outbound config compiled from w,
// compiling it if no proxy of ns was connected when w was compiled. It is
// shared only while w is the current world; proxies of one namespace that
// connect together wait for one compilation.
func (h *Hub) outboundFor(w *compiler.World, ns string) (*nsOutbound, error) {
	h.mu.Lock()
	if h.world != w {
		h.mu.Unlock()
		return encodeNamespace(w, ns, nil, newSharedServices(nil))
	}
	if out := h.outbound[ns]; out != nil {
		h.mu.Unlock()
		return out, nil
	}
	if f := h.compiling[ns]; f != nil && f.world == w {
		h.mu.Unlock()
		<-f.done
		return f.out, f.err
	}
	f := &flight{world: w, done: make(chan struct{})}
	if h.compiling == nil {
		h.compiling = map[string]*flight{}
	}
	h.compiling[ns] = f
	shared := h.shared
	h.mu.Unlock()

	if shared == nil {
		shared = newSharedServices(nil)
	}
	f.out, f.err = encodeNamespace(w, ns, nil, shared)
	h.mu.Lock()
	if h.compiling[ns] == f {
		delete(h.compiling, ns)
	}
	if f.err == nil && h.world == w {
		if cur := h.outbound[ns]; cur != nil {
			f.out = cur
		} else {
			h.outbound[ns] = f.out
		}
	}
	h.mu.Unlock()
	close(f.done)
	return f.out, f.err
}

// flight is one compilation of a namespace's outbound config for
// outboundFor.
type flight struct {
	world *compiler.World
	done  chan struct{}
	out   *nsOutbound
	err   error
}

// add registers a proxy. It reports whether a compilation finished since
// the proxy's view was built, in which case the caller rebuilds it: that
// compilation did not see the proxy.
func (h *Hub) add(p *proxy, v *view) (stale bool) {
	h.mu.Lock()
	h.proxies[p] = struct{}{}
	n := len(h.proxies)
	stale = h.world != v.world
	h.mu.Unlock()
	h.Metrics.connected.Set(float64(n))
	h.signal()
	return stale
}

func (h *Hub) remove(p *proxy) {
	h.mu.Lock()
	delete(h.proxies, p)
	n := len(h.proxies)
	h.mu.Unlock()
	h.Metrics.connected.Set(float64(n))
	h.signal()
}

// signal tells the consumer of Changed that acks or the proxy set moved.
func (h *Hub) signal() {
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// Changed fires (coalesced) when Applied's answers may have changed: a proxy
// connected, left, was sent a new snapshot, or acked one. It has one
// consumer (the status writers).
func (h *Hub) Changed() <-chan struct{} {
	h.init()
	return h.changed
}

// Applied says, of the connected proxies whose current snapshot carries
// source ("HTTPRoute ns/name", "TrafficSplit ns/name",
// "AuthorizationPolicy ns/name"), how many acknowledged a snapshot carrying
// it at generation gen or later.
func (h *Hub) Applied(source string, gen int64) (applied, total int) {
	h.init()
	h.mu.Lock()
	defer h.mu.Unlock()
	for p := range h.proxies {
		p.mu.Lock()
		if p.cur == nil {
			p.mu.Unlock()
			continue
		}
		if _, ok := p.cur.carried.generation(source); ok {
			total++
			if g, ok := p.acked.generation(source); ok && g >= gen && p.ackErr == "" {
				applied++
			}
		}
		p.mu.Unlock()
	}
	return applied, total
}

// Report is one replica's summary of its proxies.
type Report struct {
	Connected int            `json:"connected"`
	Stale     int            `json:"stale"`
	ByVersion map[string]int `json:"byVersion"`
	// Sources is what Applied answers from, per source, so that the status
	// writer (the leader of one revision) can add up every replica's and
	// every revision's proxies (MeshCounter).
	Sources map[string]SourceAcks `json:"sources,omitempty"`
}

// SourceAcks is, for one source, how many of a replica's proxies carry it
// in their current snapshot (Total) and, by generation, how many of those
// acknowledged a snapshot carrying it at that generation.
type SourceAcks struct {
	Total int           `json:"total"`
	Acked map[int64]int `json:"acked,omitempty"`
}

// applied counts the acknowledgements at generation gen or later.
func (s SourceAcks) applied(gen int64) int {
	n := 0
	for g, c := range s.Acked {
		if g >= gen {
			n += c
		}
	}
	return n
}

func (s SourceAcks) equal(o SourceAcks) bool {
	return s.Total == o.Total && maps.Equal(s.Acked, o.Acked)
}

// Report counts the connected proxies, those that have not acknowledged
// the last snapshot they were sent, and proxies by weft-proxy version.
func (h *Hub) Report() Report {
	h.init()
	r := Report{ByVersion: map[string]int{}, Sources: map[string]SourceAcks{}}
	h.mu.Lock()
	defer h.mu.Unlock()
	count := func(p *proxy, sources map[string]int64) {
		for src := range sources {
			sa := r.Sources[src]
			sa.Total++
			if g, ok := p.acked.generation(src); ok && p.ackErr == "" {
				if sa.Acked == nil {
					sa.Acked = map[int64]int{}
				}
				sa.Acked[g]++
			}
			r.Sources[src] = sa
		}
	}
	for p := range h.proxies {
		r.Connected++
		r.ByVersion[p.proxyVersion]++
		p.mu.Lock()
		if p.sentVersion == "" || p.sentVersion != p.ackedVersion || p.ackErr != "" {
			r.Stale++
		}
		if p.cur != nil {
			count(p, p.cur.carried.out)
			count(p, p.cur.carried.policies)
		}
		p.mu.Unlock()
	}
	return r
}

// ProxyState is what the hub knows of one proxy (tests, diagnostics).
type ProxyState struct {
	Pod, ProxyVersion, Sent, Acked, Error string
}

// Proxies lists the connected proxies.
func (h *Hub) Proxies() []ProxyState {
	h.init()
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]ProxyState, 0, len(h.proxies))
	for p := range h.proxies {
		p.mu.Lock()
		out = append(out, ProxyState{Pod: p.namespace + "/" + p.pod, ProxyVersion: p.proxyVersion, Sent: p.sentVersion, Acked: p.ackedVersion, Error: p.ackErr})
		p.mu.Unlock()
	}
	return out
}

// bundle returns the current trust bundle and its hash.
func (h *Hub) bundle() ([]byte, [32]byte) {
	if h.TrustBundle == nil {
		return nil, [32]byte{}
	}
	b := h.TrustBundle()
	return b, sha256.Sum256(b)
}

// wantBundle is the hash of the trust bundle proxies are to hold.
func (h *Hub) wantBundle() [32]byte {
	if s := h.bundleSum.Load(); s != nil {
		return *s
	}
	_, sum := h.bundle()
	h.bundleSum.CompareAndSwap(nil, &sum)
	return *h.bundleSum.Load()
}

// watchBundle checks the trust bundle every BundleInterval, for a source
// that cannot say when it changed; BundleChanged is the immediate path.
func (h *Hub) watchBundle(ctx context.Context) {
	if h.TrustBundle == nil {
		return
	}
	every := h.BundleInterval
	if every <= 0 {
		every = 2 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.BundleChanged()
	}
}

// BundleChanged wakes every proxy if the trust bundle differs from the one
// they are to hold, so that they are sent the new one. The issuer store
// calls it when it loads a new issuer.
func (h *Hub) BundleChanged() {
	h.init()
	if h.TrustBundle == nil {
		return
	}
	_, sum := h.bundle()
	if sum == h.wantBundle() {
		return
	}
	h.bundleSum.Store(&sum)
	h.Log.Info("The trust bundle changed; sending it to every proxy")
	h.mu.Lock()
	for p := range h.proxies {
		p.wake()
	}
	h.mu.Unlock()
}
