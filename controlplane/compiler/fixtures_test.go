package compiler

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

// Builders for Worlds made in memory. They set only what the compiler reads,
// the way the API server would have stored it.

// t0 is the creation time of the oldest object; age(n) is n minutes later.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func age(n int) metav1.Time { return metav1.NewTime(t0.Add(time.Duration(n) * time.Minute)) }

func meta(ns, name string, gen int64, created int) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, Generation: gen, CreationTimestamp: age(created)}
}

func newWorld(objs ...any) *World {
	w := &World{
		Mesh: Mesh{
			TrustDomain:   "cluster.local",
			ClusterDomain: "cluster.local",
			MTLSMode:      meshconfig.MTLSStrict,
			DefaultPolicy: meshconfig.DefaultAllow,
		},
		Namespaces: map[string]*corev1.Namespace{},
		Services:   map[key]*corev1.Service{},
		Slices:     map[key][]*discoveryv1.EndpointSlice{},
		Pods:       map[key]*corev1.Pod{},
	}
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Namespace:
			w.Namespaces[o.Name] = o
		case *corev1.Service:
			w.Services[key{o.Namespace, o.Name}] = o
		case *discoveryv1.EndpointSlice:
			k := key{o.Namespace, o.Labels[discoveryv1.LabelServiceName]}
			w.Slices[k] = append(w.Slices[k], o)
		case *corev1.Pod:
			w.Pods[key{o.Namespace, o.Name}] = o
		case *gatewayv1.HTTPRoute:
			w.Routes = append(w.Routes, o)
		case *meshv1alpha1.TrafficSplit:
			w.Splits = append(w.Splits, o)
		case *meshv1alpha1.AuthorizationPolicy:
			w.Policies = append(w.Policies, o)
		case []any:
			sub := newWorld(o...)
			for k, v := range sub.Namespaces {
				w.Namespaces[k] = v
			}
			for k, v := range sub.Services {
				w.Services[k] = v
			}
			for k, v := range sub.Slices {
				w.Slices[k] = append(w.Slices[k], v...)
			}
			for k, v := range sub.Pods {
				w.Pods[k] = v
			}
			w.Routes = append(w.Routes, sub.Routes...)
			w.Splits = append(w.Splits, sub.Splits...)
			w.Policies = append(w.Policies, sub.Policies...)
		default:
			panic("newWorld: unexpected object")
		}
	}
	w.sort()
	return w
}

func namespace(name string, annotations map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
}

type svcPort struct {
	name   string
	port   int32
	target intstr.IntOrString
	app    string
	udp    bool
}

func service(ns, name, ip string, selector map[string]string, ports ...svcPort) *corev1.Service {
	s := &corev1.Service{ObjectMeta: meta(ns, name, 1, 0), Spec: corev1.ServiceSpec{Selector: selector}}
	if ip != "" {
		s.Spec.ClusterIP = ip
		s.Spec.ClusterIPs = []string{ip}
	}
	for _, p := range ports {
		sp := corev1.ServicePort{Name: p.name, Port: p.port, TargetPort: p.target, Protocol: corev1.ProtocolTCP}
		if p.udp {
			sp.Protocol = corev1.ProtocolUDP
		}
		if p.app != "" {
			sp.AppProtocol = ptr.To(p.app)
		}
		if sp.TargetPort == (intstr.IntOrString{}) {
			sp.TargetPort = intstr.FromInt32(p.port)
		}
		s.Spec.Ports = append(s.Spec.Ports, sp)
	}
	return s
}

// ep is one endpoint of a slice: a pod's address and readiness.
type ep struct {
	pod, ip string
	ready   *bool
}

func endpointSlice(ns, name, svc string, ports map[string]int32, eps ...ep) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for n, p := range ports {
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr.To(n), Port: ptr.To(p), Protocol: ptr.To(corev1.ProtocolTCP)})
	}
	for _, e := range eps {
		de := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready}}
		if e.pod != "" {
			de.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: e.pod}
		}
		es.Endpoints = append(es.Endpoints, de)
	}
	return es
}

// pod makes a pod; meshed pods carry the injector's revision label.
func pod(ns, name, sa string, meshed bool, lbls map[string]string, ports ...int32) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{}}}
	for k, v := range lbls {
		p.Labels[k] = v
	}
	if meshed {
		p.Labels[meshv1alpha1.LabelRevision] = "stable"
	}
	p.Spec.ServiceAccountName = sa
	c := corev1.Container{Name: "app"}
	for _, port := range ports {
		c.Ports = append(c.Ports, corev1.ContainerPort{ContainerPort: port, Protocol: corev1.ProtocolTCP})
	}
	p.Spec.Containers = []corev1.Container{c}
	return p
}

func serviceParent(name string, ns string, port int32) gatewayv1.ParentReference {
	p := gatewayv1.ParentReference{
		Group: ptr.To(gatewayv1.Group("")),
		Kind:  ptr.To(gatewayv1.Kind("Service")),
		Name:  gatewayv1.ObjectName(name),
	}
	if ns != "" {
		p.Namespace = ptr.To(gatewayv1.Namespace(ns))
	}
	if port != 0 {
		p.Port = ptr.To(gatewayv1.PortNumber(port))
	}
	return p
}

func gatewayParent(name string) gatewayv1.ParentReference {
	return gatewayv1.ParentReference{Name: gatewayv1.ObjectName(name)}
}

func backendRef(name string, port int32, weight int32) gatewayv1.HTTPBackendRef {
	return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
		BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: ptr.To(gatewayv1.PortNumber(port))},
		Weight:                 ptr.To(weight),
	}}
}

func route(ns, name string, gen int64, created int, parents []gatewayv1.ParentReference, rules ...gatewayv1.HTTPRouteRule) *gatewayv1.HTTPRoute {
	return &gatewayv1.HTTPRoute{
		ObjectMeta: meta(ns, name, gen, created),
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parents},
			Rules:           rules,
		},
	}
}

func pathPrefix(v string) gatewayv1.HTTPRouteMatch {
	return gatewayv1.HTTPRouteMatch{Path: &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchPathPrefix), Value: ptr.To(v)}}
}

func split(ns, name, svc string, gen int64, created int, matches []gatewayv1.HTTPRouteMatch, backends ...gatewayv1.HTTPBackendRef) *meshv1alpha1.TrafficSplit {
	s := &meshv1alpha1.TrafficSplit{ObjectMeta: meta(ns, name, gen, created), Spec: meshv1alpha1.TrafficSplitSpec{Service: svc, Matches: matches}}
	for _, b := range backends {
		s.Spec.Backends = append(s.Spec.Backends, b.BackendRef)
	}
	return s
}

func policy(ns, name string, gen int64, created int, kind, target string, action meshv1alpha1.AuthorizationAction, rules ...meshv1alpha1.AuthorizationRule) *meshv1alpha1.AuthorizationPolicy {
	return &meshv1alpha1.AuthorizationPolicy{
		ObjectMeta: meta(ns, name, gen, created),
		Spec: meshv1alpha1.AuthorizationPolicySpec{
			TargetRef: gatewayv1.LocalPolicyTargetReference{Kind: gatewayv1.Kind(kind), Name: gatewayv1.ObjectName(target)},
			Action:    action,
			Rules:     rules,
		},
	}
}

func externalName(ns, name string) *corev1.Service {
	s := service(ns, name, "", nil, svcPort{name: "https", port: 443})
	s.Spec.Type = corev1.ServiceTypeExternalName
	s.Spec.ExternalName = "example.org"
	return s
}

// namedPort names one of the pod's container ports.
func namedPort(p *corev1.Pod, port int32, name string) *corev1.Pod {
	for i, cp := range p.Spec.Containers[0].Ports {
		if cp.ContainerPort == port {
			p.Spec.Containers[0].Ports[i].Name = name
		}
	}
	return p
}
