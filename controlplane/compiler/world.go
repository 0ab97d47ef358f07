// Package compiler turns the cluster's Services, EndpointSlices, Pods,
// HTTPRoutes (GAMMA), TrafficSplits and AuthorizationPolicies into the
// immutable per-proxy snapshots of pkg/meshconfig, and computes the status
// conditions of the routing and policy objects.
//
// When an HTTPRoute and a TrafficSplit route the same Service, the HTTPRoute
// wins and the split says so in its status; activeSplit documents the full
// precedence (producer and consumer routes, several splits).
//
// Everything here is a pure function of a World (a consistent read of the
// cluster); nothing talks to the API server or to proxies. The config server
// decides when to compile and whom to send what.
package compiler

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

// Mesh holds the mesh-wide settings a compilation needs (from the
// MeshControlPlane spec).
type Mesh struct {
	TrustDomain   string
	ClusterDomain string
	MTLSMode      meshconfig.MTLSMode
	DefaultPolicy meshconfig.DefaultPolicy
	OpaquePorts   []uint16
}

// World is one consistent read of everything the compiler looks at. Its
// objects are shared with the informer cache and must not be modified.
type World struct {
	Mesh       Mesh
	Namespaces map[string]*corev1.Namespace
	Services   map[key]*corev1.Service
	Slices     map[key][]*discoveryv1.EndpointSlice // by Service
	Pods       map[key]*corev1.Pod
	Routes     []*gatewayv1.HTTPRoute
	Splits     []*meshv1alpha1.TrafficSplit
	Policies   []*meshv1alpha1.AuthorizationPolicy

	// Set by Load, for a world whose maps no longer change: the Services'
	// keys in order, and the endpoints resolved so far.
	sortedServices *[]key
	endpoints      *endpointCache
}

type key struct{ ns, name string }

func (k key) String() string { return k.ns + "/" + k.name }

// Load reads a World from a (cached) reader. The lists are not deep-copied:
// the World only reads them.
func Load(ctx context.Context, r client.Reader, mesh Mesh) (*World, error) {
	return load(ctx, r, mesh, true)
}

// LoadForStatus reads only what RouteParents, SplitConditions and
// PolicyConditions look at (Services, HTTPRoutes, TrafficSplits), and only in
// the given namespaces (all when none is given), so a status writer does not
// walk the whole cluster on each reconcile. Its World must not be used to
// compile snapshots.
//
// The namespaces to pass: an object's own, plus for an HTTPRoute those of its
// Service parentRefs (backendRefs in other namespaces are refused without a
// look-up).
func LoadForStatus(ctx context.Context, r client.Reader, namespaces ...string) (*World, error) {
	if len(namespaces) == 0 {
		return load(ctx, r, Mesh{}, false)
	}
	w := &World{
		Namespaces: map[string]*corev1.Namespace{},
		Services:   map[key]*corev1.Service{},
		Slices:     map[key][]*discoveryv1.EndpointSlice{},
		Pods:       map[key]*corev1.Pod{},
	}
	seen := map[string]bool{}
	for _, ns := range namespaces {
		if seen[ns] {
			continue
		}
		seen[ns] = true
		var svcs corev1.ServiceList
		var routes gatewayv1.HTTPRouteList
		var splits meshv1alpha1.TrafficSplitList
		for _, l := range []client.ObjectList{&svcs, &routes, &splits} {
			if err := r.List(ctx, l, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
				if _, isRoutes := l.(*gatewayv1.HTTPRouteList); isRoutes && apimeta.IsNoMatchError(err) {
					continue
				}
				return nil, fmt.Errorf("listing %T in %s: %w", l, ns, err)
			}
		}
		for i := range svcs.Items {
			s := &svcs.Items[i]
			w.Services[key{s.Namespace, s.Name}] = s
		}
		for i := range routes.Items {
			w.Routes = append(w.Routes, &routes.Items[i])
		}
		for i := range splits.Items {
			w.Splits = append(w.Splits, &splits.Items[i])
		}
	}
	w.sort()
	return w, nil
}

func load(ctx context.Context, r client.Reader, mesh Mesh, full bool) (*World, error) {
	w := &World{
		Mesh:       mesh,
		Namespaces: map[string]*corev1.Namespace{},
		Services:   map[key]*corev1.Service{},
		Slices:     map[key][]*discoveryv1.EndpointSlice{},
		Pods:       map[key]*corev1.Pod{},
	}
	if w.Mesh.ClusterDomain == "" {
		w.Mesh.ClusterDomain = "cluster.local"
	}
	// The objects are the cache's own (never to be changed), not copies:
	// a World is kept while it is current, and copies of a thousand Pods
	// and Services are megabytes.
	nss, err := cached[corev1.Namespace, *corev1.NamespaceList](ctx, r, full)
	if err != nil {
		return nil, err
	}
	svcs, err := cached[corev1.Service, *corev1.ServiceList](ctx, r, true)
	if err != nil {
		return nil, err
	}
	eps, err := cached[discoveryv1.EndpointSlice, *discoveryv1.EndpointSliceList](ctx, r, full)
	if err != nil {
		return nil, err
	}
	pods, err := cached[corev1.Pod, *corev1.PodList](ctx, r, full)
	if err != nil {
		return nil, err
	}
	routes, err := cached[gatewayv1.HTTPRoute, *gatewayv1.HTTPRouteList](ctx, r, true)
	if err != nil {
		if !apimeta.IsNoMatchError(err) {
			return nil, err
		}
		// Gateway API's CRDs are not installed: there are no HTTPRoutes,
		// and TrafficSplits still work.
		routes = nil
	}
	splits, err := cached[meshv1alpha1.TrafficSplit, *meshv1alpha1.TrafficSplitList](ctx, r, true)
	if err != nil {
		return nil, err
	}
	pols, err := cached[meshv1alpha1.AuthorizationPolicy, *meshv1alpha1.AuthorizationPolicyList](ctx, r, full)
	if err != nil {
		return nil, err
	}
	for _, ns := range nss {
		w.Namespaces[ns.Name] = ns
	}
	for _, s := range svcs {
		w.Services[key{s.Namespace, s.Name}] = s
	}
	for _, es := range eps {
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		k := key{es.Namespace, svc}
		w.Slices[k] = append(w.Slices[k], es)
	}
	for _, p := range pods {
		w.Pods[key{p.Namespace, p.Name}] = p
	}
	w.Routes, w.Splits, w.Policies = routes, splits, pols
	w.sort()
	keys := sortedKeys(w.Services)
	w.sortedServices = &keys
	w.endpoints = &endpointCache{m: map[backendKey][]meshconfig.Endpoint{}}
	return w, nil
}

// sort orders routes, splits and policies the way Gateway API breaks ties:
// oldest first, then by namespace/name, so compilation is deterministic.
func (w *World) sort() {
	cmp := func(a, b client.Object) int {
		if c := a.GetCreationTimestamp().Compare(b.GetCreationTimestamp().Time); c != 0 {
			return c
		}
		return strings.Compare(a.GetNamespace()+"/"+a.GetName(), b.GetNamespace()+"/"+b.GetName())
	}
	slices.SortFunc(w.Routes, func(a, b *gatewayv1.HTTPRoute) int { return cmp(a, b) })
	slices.SortFunc(w.Splits, func(a, b *meshv1alpha1.TrafficSplit) int { return cmp(a, b) })
	slices.SortFunc(w.Policies, func(a, b *meshv1alpha1.AuthorizationPolicy) int { return cmp(a, b) })
}

// Meshed says whether a pod runs a Weft proxy (the injector labels it).
func Meshed(p *corev1.Pod) bool {
	return p != nil && p.Labels[meshv1alpha1.LabelRevision] != ""
}

// Pod is the pod ns/name of this world, nil if it has none.
func (w *World) Pod(ns, name string) *corev1.Pod { return w.Pods[key{ns, name}] }

// PodIdentity is the SPIFFE ID of a pod's ServiceAccount.
func (w *World) PodIdentity(p *corev1.Pod) string {
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	return "spiffe://" + w.Mesh.TrustDomain + "/ns/" + p.Namespace + "/sa/" + sa
}

// cached lists every object of kind T, or nothing when want is false. From an
// informer cache whose informer has synced it returns the cached objects
// themselves; from any other reader (or before the sync) it lists with
// UnsafeDisableDeepCopy, which still copies each object into the list.
func cached[T any, L interface {
	client.ObjectList
	*LT
}, LT any](ctx context.Context, r client.Reader, want bool) ([]*T, error) {
	if !want {
		return nil, nil
	}
	var zero T
	obj, ok := any(&zero).(client.Object)
	if !ok {
		return nil, fmt.Errorf("%T is not an object", zero)
	}
	if ic, ok := r.(interface {
		GetInformer(context.Context, client.Object, ...cache.InformerGetOption) (cache.Informer, error)
	}); ok {
		inf, err := ic.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
		if err != nil {
			return nil, fmt.Errorf("listing %T: %w", obj, err)
		}
		if s, ok := inf.(interface{ GetStore() toolscache.Store }); ok && inf.HasSynced() {
			items := s.GetStore().List()
			out := make([]*T, 0, len(items))
			for _, it := range items {
				if t, ok := it.(*T); ok {
					out = append(out, t)
				}
			}
			return out, nil
		}
	}
	list := L(new(LT))
	if err := r.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing %T: %w", obj, err)
	}
	objs, err := apimeta.ExtractList(list)
	if err != nil {
		return nil, err
	}
	out := make([]*T, 0, len(objs))
	for _, o := range objs {
		if t, ok := any(o).(*T); ok {
			out = append(out, t)
		}
	}
	return out, nil
}
