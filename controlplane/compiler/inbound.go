package compiler

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

// Inbound is what pod serves and who may call it.
func (w *World) Inbound(pod *corev1.Pod) meshconfig.Inbound {
	in := meshconfig.Inbound{DefaultPolicy: w.defaultPolicy(pod.Namespace)}
	seen := map[int32]bool{}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if (p.Protocol != "" && p.Protocol != corev1.ProtocolTCP) || seen[p.ContainerPort] {
				continue
			}
			seen[p.ContainerPort] = true
			in.Ports = append(in.Ports, meshconfig.InboundPort{Port: uint16(p.ContainerPort), Name: p.Name, Protocol: w.inboundProtocol(pod, p)})
		}
	}
	slices.SortFunc(in.Ports, func(a, b meshconfig.InboundPort) int { return int(a.Port) - int(b.Port) })
	for _, ap := range w.Policies {
		if ports, ok := w.selects(ap, pod); ok {
			in.Policies = append(in.Policies, w.compilePolicy(ap, ports))
		}
	}
	return in
}

// defaultPolicy: the namespace annotation, else the mesh's default.
func (w *World) defaultPolicy(ns string) meshconfig.DefaultPolicy {
	if n := w.Namespaces[ns]; n != nil {
		// Annotations are hand-written: "deny" means Deny. Anything else
		// unknown falls back to the mesh default.
		v := strings.TrimSpace(n.Annotations[meshv1alpha1.AnnotationDefaultPolicy])
		for _, p := range []meshconfig.DefaultPolicy{meshconfig.DefaultAllow, meshconfig.DefaultDeny, meshconfig.DefaultAuthenticated} {
			if strings.EqualFold(v, string(p)) {
				return p
			}
		}
	}
	if w.Mesh.DefaultPolicy == "" {
		return meshconfig.DefaultAllow
	}
	return w.Mesh.DefaultPolicy
}

// inboundProtocol takes the hint of a Service port that targets this
// container port.
func (w *World) inboundProtocol(pod *corev1.Pod, cp corev1.ContainerPort) meshconfig.Protocol {
	if slices.Contains(w.Mesh.OpaquePorts, uint16(cp.ContainerPort)) {
		return meshconfig.ProtocolOpaque
	}
	for _, svc := range w.servicesOf(pod) {
		for _, sp := range svc.Spec.Ports {
			if targetPort(sp, pod) == cp.ContainerPort {
				if p := w.protocol(sp); p != meshconfig.ProtocolDetect {
					return p
				}
			}
		}
	}
	return meshconfig.ProtocolDetect
}

// servicesOf are the Services in pod's namespace whose selector matches it.
func (w *World) servicesOf(pod *corev1.Pod) []*corev1.Service {
	var out []*corev1.Service
	for k, svc := range w.Services {
		if k.ns == pod.Namespace && selectsPod(svc, pod) {
			out = append(out, svc)
		}
	}
	// Map order would make the protocol hint (first Service with one wins)
	// and so the snapshot version differ between two compilations.
	slices.SortFunc(out, func(a, b *corev1.Service) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func selectsPod(svc *corev1.Service, pod *corev1.Pod) bool {
	return len(svc.Spec.Selector) > 0 && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels))
}

// targetPort resolves a Service port to the pod's container port (0 if the
// named port does not exist in the pod).
func targetPort(sp corev1.ServicePort, pod *corev1.Pod) int32 {
	switch sp.TargetPort.Type {
	case intstr.Int:
		if sp.TargetPort.IntVal == 0 {
			return sp.Port
		}
		return sp.TargetPort.IntVal
	default:
		for _, c := range pod.Spec.Containers {
			for _, p := range c.Ports {
				if p.Name == sp.TargetPort.StrVal {
					return p.ContainerPort
				}
			}
		}
	}
	return 0
}

// selects says whether ap applies to pod and, for a Service target, on which
// of the pod's ports (the Service's target ports).
func (w *World) selects(ap *meshv1alpha1.AuthorizationPolicy, pod *corev1.Pod) ([]uint16, bool) {
	if ap.Namespace != pod.Namespace || !policyValid(ap) {
		return nil, false
	}
	t := ap.Spec.TargetRef
	switch t.Kind {
	case "Namespace":
		return nil, string(t.Name) == pod.Namespace
	case "Service":
		svc := w.Services[key{ap.Namespace, string(t.Name)}]
		if svc == nil || !selectsPod(svc, pod) {
			return nil, false
		}
		var ports []uint16
		for _, sp := range svc.Spec.Ports {
			if tp := targetPort(sp, pod); tp > 0 && !slices.Contains(ports, uint16(tp)) {
				ports = append(ports, uint16(tp))
			}
		}
		slices.Sort(ports)
		// A Service with no resolvable port still selects the pod: an Allow
		// policy then allows nothing, which fails closed.
		if len(ports) == 0 {
			ports = []uint16{0}
		}
		return ports, true
	}
	return nil, false
}

// policyValid mirrors the checks the schema cannot make (see status.go).
func policyValid(ap *meshv1alpha1.AuthorizationPolicy) bool {
	t := ap.Spec.TargetRef
	return t.Group == "" && (t.Kind == "Service" || (t.Kind == "Namespace" && string(t.Name) == ap.Namespace))
}

func (w *World) compilePolicy(ap *meshv1alpha1.AuthorizationPolicy, ports []uint16) meshconfig.AuthorizationPolicy {
	action := meshconfig.ActionAllow
	if ap.Spec.Action == meshv1alpha1.ActionDeny {
		action = meshconfig.ActionDeny
	}
	out := meshconfig.AuthorizationPolicy{
		Source:     ap.Namespace + "/" + ap.Name,
		Generation: ap.Generation,
		Action:     action,
		Ports:      ports,
	}
	for _, r := range ap.Spec.Rules {
		mr := meshconfig.AuthorizationRule{}
		for _, f := range r.From {
			src := meshconfig.Source{Namespaces: slices.Clone(f.Namespaces), Unauthenticated: f.Unauthenticated}
			for _, id := range f.Identities {
				src.Identities = append(src.Identities, string(id))
			}
			// ServiceAccounts stay a field of their own: the fields of a from
			// entry are ANDed, so folding them into identities would turn
			// "identity X and service account Y" into "X or Y" and widen
			// what an Allow policy lets in.
			for _, sa := range f.ServiceAccounts {
				ns := sa.Namespace
				if ns == "" {
					ns = ap.Namespace
				}
				src.ServiceAccounts = append(src.ServiceAccounts, ns+"/"+sa.Name)
			}
			mr.From = append(mr.From, src)
		}
		for _, t := range r.To {
			op := meshconfig.Operation{}
			for _, p := range t.Ports {
				op.Ports = append(op.Ports, uint16(p))
			}
			for _, m := range t.Methods {
				op.Methods = append(op.Methods, string(m))
			}
			for _, p := range t.Paths {
				typ := meshconfig.MatchPathPrefix
				if p.Type == "Exact" {
					typ = meshconfig.MatchExact
				}
				op.Paths = append(op.Paths, meshconfig.PathMatch{Type: typ, Value: p.Value})
			}
			mr.To = append(mr.To, op)
		}
		out.Rules = append(out.Rules, mr)
	}
	return out
}
