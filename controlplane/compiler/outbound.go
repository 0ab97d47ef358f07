package compiler

import (
	"cmp"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

// Outbound is what a proxy in clientNS may reach. It depends on the client's
// namespace only (GAMMA consumer routes apply to their own namespace), so the
// config server computes it once per namespace.
func (w *World) Outbound(clientNS string) meshconfig.Outbound {
	out := meshconfig.Outbound{OpaquePorts: slices.Clone(w.Mesh.OpaquePorts)}
	for _, k := range w.serviceKeys() {
		svc := w.Services[k]
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		out.Services = append(out.Services, w.service(svc, clientNS))
	}
	return out
}

// serviceKeys are the keys of w.Services ordered by "namespace/name". A
// world read by Load computes them once (every namespace's compilation walks
// them, twice).
func (w *World) serviceKeys() []key {
	if w.sortedServices != nil && len(*w.sortedServices) == len(w.Services) {
		return *w.sortedServices
	}
	return sortedKeys(w.Services)
}

func sortedKeys(m map[key]*corev1.Service) []key {
	keys := make([]key, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	return keys
}

// compareKeys orders keys as strings.Compare orders their String()s,
// without building them.
func compareKeys(a, b key) int {
	if a.ns == b.ns {
		return strings.Compare(a.name, b.name)
	}
	// The namespaces differ: at the first byte where they differ, or where
	// the shorter one ends and its "/" is compared with the other's byte.
	n := min(len(a.ns), len(b.ns))
	if c := strings.Compare(a.ns[:n], b.ns[:n]); c != 0 {
		return c
	}
	var c int
	if len(a.ns) == n {
		c = cmp.Compare(byte('/'), b.ns[n])
	} else {
		c = cmp.Compare(a.ns[n], byte('/'))
	}
	if c == 0 {
		// Only if a namespace held a "/", which Kubernetes refuses.
		return strings.Compare(a.String(), b.String())
	}
	return c
}

func (w *World) service(svc *corev1.Service, clientNS string) meshconfig.Service {
	ms := meshconfig.Service{
		Name:      svc.Name,
		Namespace: svc.Namespace,
	}
	// The bare name means this Service only to clients of its own
	// namespace; elsewhere it names another namespace's Service.
	if svc.Namespace == clientNS {
		ms.Hosts = append(ms.Hosts, svc.Name)
	}
	ms.Hosts = append(ms.Hosts,
		svc.Name+"."+svc.Namespace,
		svc.Name+"."+svc.Namespace+".svc",
		svc.Name+"."+svc.Namespace+".svc."+w.Mesh.ClusterDomain,
	)
	for _, ip := range svc.Spec.ClusterIPs {
		if ip != "" && ip != corev1.ClusterIPNone && net.ParseIP(ip) != nil {
			ms.Addresses = append(ms.Addresses, ip)
		}
	}
	routes := w.routesFor(svc, clientNS)
	split := w.activeSplit(svc, clientNS)
	for _, p := range svc.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue
		}
		sp := meshconfig.ServicePort{
			Port:            uint16(p.Port),
			Name:            p.Name,
			Protocol:        w.protocol(p),
			DefaultBackends: []meshconfig.Backend{w.backend(svc.Namespace, svc.Name, p.Port, 1)},
		}
		if sp.Protocol != meshconfig.ProtocolOpaque {
			for _, r := range routes {
				if mr, ok := w.compileRoute(r, svc, p); ok {
					sp.Routes = append(sp.Routes, mr)
				}
			}
			if split != nil && len(split.Spec.Matches) > 0 {
				sp.Routes = append(sp.Routes, w.splitRoute(split, svc, p))
			}
		}
		if split != nil && len(split.Spec.Matches) == 0 {
			sp.DefaultBackends = w.splitBackends(split, svc, p)
		}
		ms.Ports = append(ms.Ports, sp)
	}
	return ms
}

// protocol maps a Service port's appProtocol (and the mesh's opaque ports) to a
// hint, so the proxy skips detection where the answer is known.
func (w *World) protocol(p corev1.ServicePort) meshconfig.Protocol {
	if slices.Contains(w.Mesh.OpaquePorts, uint16(p.Port)) ||
		(p.TargetPort.IntValue() > 0 && slices.Contains(w.Mesh.OpaquePorts, uint16(p.TargetPort.IntValue()))) {
		return meshconfig.ProtocolOpaque
	}
	if p.AppProtocol == nil {
		return meshconfig.ProtocolDetect
	}
	switch strings.ToLower(*p.AppProtocol) {
	case "http", "kubernetes.io/http":
		return meshconfig.ProtocolHTTP1
	case "kubernetes.io/h2c", "h2c", "http2":
		return meshconfig.ProtocolHTTP2
	case "grpc", "kubernetes.io/grpc":
		return meshconfig.ProtocolGRPC
	case "tcp", "kubernetes.io/tcp", "mysql", "postgresql", "redis", "smtp":
		return meshconfig.ProtocolOpaque
	}
	return meshconfig.ProtocolDetect
}

// backend resolves a Service port to its ready endpoints, each with the
// identity its proxy must present (none for an unmeshed pod).
func (w *World) backend(ns, name string, port int32, weight uint32) meshconfig.Backend {
	b := meshconfig.Backend{Name: name, Namespace: ns, Weight: weight}
	if w.endpoints == nil {
		b.Endpoints = w.readyEndpoints(ns, name, port)
		return b
	}
	// Every namespace's compilation resolves every Service: the endpoints
	// are the same for all, so they are resolved once per world and shared
	// (they are only read, then encoded).
	k := backendKey{key{ns, name}, port}
	w.endpoints.mu.Lock()
	eps, ok := w.endpoints.m[k]
	w.endpoints.mu.Unlock()
	if !ok {
		eps = w.readyEndpoints(ns, name, port)
		w.endpoints.mu.Lock()
		w.endpoints.m[k] = eps
		w.endpoints.mu.Unlock()
	}
	b.Endpoints = eps
	return b
}

// backendKey is a Service port.
type backendKey struct {
	svc  key
	port int32
}

// endpointCache holds the ready endpoints of Service ports, per world.
type endpointCache struct {
	mu sync.Mutex
	m  map[backendKey][]meshconfig.Endpoint
}

// readyEndpoints resolves a Service port to its ready endpoints, sorted by
// address.
func (w *World) readyEndpoints(ns, name string, port int32) []meshconfig.Endpoint {
	var eps []meshconfig.Endpoint
	svc := w.Services[key{ns, name}]
	if svc == nil {
		return nil
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == port {
			sp = &svc.Spec.Ports[i]
		}
	}
	if sp == nil {
		return nil
	}
	seen := map[string]bool{}
	for _, es := range w.Slices[key{ns, name}] {
		if es.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		var target int32
		for _, ep := range es.Ports {
			if ep.Port != nil && derefStr(ep.Name) == sp.Name {
				target = *ep.Port
			}
		}
		if target == 0 {
			continue
		}
		for _, e := range es.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			var pod *corev1.Pod
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
				pod = w.Pods[key{es.Namespace, e.TargetRef.Name}]
			}
			for _, a := range e.Addresses {
				addr := net.JoinHostPort(a, strconv.Itoa(int(target)))
				if seen[addr] {
					continue
				}
				seen[addr] = true
				me := meshconfig.Endpoint{Address: addr}
				if pod != nil {
					me.Pod = pod.Namespace + "/" + pod.Name
					if Meshed(pod) {
						me.Identity = w.PodIdentity(pod)
					}
				}
				eps = append(eps, me)
			}
		}
	}
	slices.SortFunc(eps, func(a, b meshconfig.Endpoint) int { return strings.Compare(a.Address, b.Address) })
	return eps
}

func derefStr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// routesFor returns the HTTPRoutes that apply to svc for clients in clientNS.
// GAMMA: a consumer route (in the client's namespace, another than the
// Service's) replaces the producer routes (in the Service's namespace) for
// that namespace's clients.
func (w *World) routesFor(svc *corev1.Service, clientNS string) []*gatewayv1.HTTPRoute {
	var producer, consumer []*gatewayv1.HTTPRoute
	for _, r := range w.Routes {
		if !routeTargets(r, svc) {
			continue
		}
		switch r.Namespace {
		case svc.Namespace:
			producer = append(producer, r)
		case clientNS:
			consumer = append(consumer, r)
		}
	}
	if len(consumer) > 0 {
		return consumer
	}
	return producer
}

// routeTargets says whether one of r's parentRefs is the Service svc, on a
// port it has. A parentRef to a port the Service lacks is not Accepted, so
// it must neither replace the producer routes nor override a TrafficSplit.
func routeTargets(r *gatewayv1.HTTPRoute, svc *corev1.Service) bool {
	for _, p := range r.Spec.ParentRefs {
		if isServiceRef(p.Group, p.Kind) && string(p.Name) == svc.Name && refNamespace(p.Namespace, r.Namespace) == svc.Namespace &&
			(p.Port == nil || servicePortExists(svc.Spec.Ports, int32(*p.Port))) {
			return true
		}
	}
	return false
}

// isServiceRef: a GAMMA parent is the core Service kind. (A parentRef's group
// defaults to gateway.networking.k8s.io, so it must be set to "".)
func isServiceRef(g *gatewayv1.Group, k *gatewayv1.Kind) bool {
	return g != nil && *g == "" && k != nil && *k == "Service"
}

func refNamespace(ns *gatewayv1.Namespace, def string) string {
	if ns == nil || *ns == "" {
		return def
	}
	return string(*ns)
}

// activeSplit is the TrafficSplit that applies to svc, or nil.
//
// Precedence, when several objects route the same Service:
//
//  1. HTTPRoutes win over TrafficSplits. Gateway API is the standard and can
//     express everything a split can (weighted backendRefs), so any HTTPRoute
//     whose parentRef is the Service, on any of its ports, switches every
//     split of that Service off. The split reports Accepted=False with reason
//     OverriddenByHTTPRoute and names the route.
//  2. GAMMA consumer routes (an HTTPRoute in the client's namespace for a
//     Service in another) apply to that namespace's clients only. They
//     replace the producer routes and the split for those clients; clients
//     elsewhere still get the split, which stays Accepted.
//  3. Of several TrafficSplits for one Service the oldest wins (then by
//     name); the others report Accepted=False with reason Conflict.
func (w *World) activeSplit(svc *corev1.Service, clientNS string) *meshv1alpha1.TrafficSplit {
	if len(w.routesFor(svc, clientNS)) > 0 {
		return nil
	}
	for _, s := range w.Splits {
		if s.Namespace == svc.Namespace && s.Spec.Service == svc.Name {
			return s
		}
	}
	return nil
}

// splitBackends resolves a split's backends for one port of its root
// Service. With a single-port root, each backend is reached on the port its
// backendRef names (root 80 → v1:8080 is fine). With a multi-port root, each
// root port goes to the backend's port of the same number, so a split never
// sends one port's traffic to another; a backend without that port keeps its
// weight with no endpoints (its share fails with 500, and ResolvedRefs says
// why) rather than receiving traffic on a port meant for something else.
func (w *World) splitBackends(s *meshv1alpha1.TrafficSplit, root *corev1.Service, port corev1.ServicePort) []meshconfig.Backend {
	var out []meshconfig.Backend
	for _, b := range s.Spec.Backends {
		if len(root.Spec.Ports) > 1 && backendIsService(b.BackendObjectReference) && refNamespace(b.Namespace, s.Namespace) == s.Namespace {
			p := gatewayv1.PortNumber(port.Port)
			b.Port = &p
		}
		out = append(out, w.backendRef(s.Namespace, b))
	}
	return out
}

func (w *World) splitRoute(s *meshv1alpha1.TrafficSplit, root *corev1.Service, port corev1.ServicePort) meshconfig.Route {
	rule := meshconfig.RouteRule{Backends: w.splitBackends(s, root, port)}
	for _, m := range s.Spec.Matches {
		rule.Matches = append(rule.Matches, convertMatch(m))
	}
	return meshconfig.Route{
		Source:            splitSource(s),
		Generation:        s.Generation,
		CreationTimestamp: s.CreationTimestamp.UTC(),
		Rules:             []meshconfig.RouteRule{rule},
	}
}

func splitSource(s *meshv1alpha1.TrafficSplit) string {
	return "TrafficSplit " + s.Namespace + "/" + s.Name
}

// backendRef resolves a Gateway API BackendRef from an object in ns. A ref
// that does not resolve keeps its weight with no endpoints, so its share of
// requests fails with 500 as Gateway API requires, and status says why.
func (w *World) backendRef(ns string, b gatewayv1.BackendRef) meshconfig.Backend {
	weight := uint32(1)
	if b.Weight != nil {
		weight = uint32(*b.Weight)
	}
	if !backendIsService(b.BackendObjectReference) || refNamespace(b.Namespace, ns) != ns || b.Port == nil {
		return meshconfig.Backend{Name: string(b.Name), Namespace: refNamespace(b.Namespace, ns), Weight: weight}
	}
	return w.backend(ns, string(b.Name), int32(*b.Port), weight)
}

func backendIsService(r gatewayv1.BackendObjectReference) bool {
	return (r.Group == nil || *r.Group == "") && (r.Kind == nil || *r.Kind == "Service")
}
