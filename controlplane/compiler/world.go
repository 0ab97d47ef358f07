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
	noCopy := client.UnsafeDisableDeepCopy
	var nss corev1.NamespaceList
	var svcs corev1.ServiceList
	var slices discoveryv1.EndpointSliceList
	var pods corev1.PodList
	var routes gatewayv1.HTTPRouteList
	var splits meshv1alpha1.TrafficSplitList
	var pols meshv1alpha1.AuthorizationPolicyList
	lists := []client.ObjectList{&svcs, &routes, &splits}
	if full {
		lists = append(lists, &nss, &slices, &pods, &pols)
	}
	for _, l := range lists {
		if err := r.List(ctx, l, noCopy); err != nil {
			if _, isRoutes := l.(*gatewayv1.HTTPRouteList); isRoutes && apimeta.IsNoMatchError(err) {
				// Gateway API's CRDs are not installed: there are no
				// HTTPRoutes, and TrafficSplits still work.
				continue
			}
			return nil, fmt.Errorf("listing %T: %w", l, err)
		}
	}
	for i := range nss.Items {
		w.Namespaces[nss.Items[i].Name] = &nss.Items[i]
	}
	for i := range svcs.Items {
		s := &svcs.Items[i]
		w.Services[key{s.Namespace, s.Name}] = s
	}
	for i := range slices.Items {
		es := &slices.Items[i]
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		k := key{es.Namespace, svc}
		w.Slices[k] = append(w.Slices[k], es)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		w.Pods[key{p.Namespace, p.Name}] = p
	}
	for i := range routes.Items {
		w.Routes = append(w.Routes, &routes.Items[i])
	}
	for i := range splits.Items {
		w.Splits = append(w.Splits, &splits.Items[i])
	}
	for i := range pols.Items {
		w.Policies = append(w.Policies, &pols.Items[i])
	}
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
