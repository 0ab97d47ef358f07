package compiler

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
)

// The status functions report what the schema cannot check: references to
// objects that do not exist, and precedence between objects. Conditions carry
// the object's generation; lastTransitionTime is left for the writer, which
// keeps it when the status does not change.

func cond(typ string, ok bool, reason, msg string, gen int64) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen}
}

// RouteParents computes HTTPRoute status.parents for the parentRefs that
// are Services (GAMMA); parents of other implementations are not ours.
func (w *World) RouteParents(r *gatewayv1.HTTPRoute) []gatewayv1.RouteParentStatus {
	var out []gatewayv1.RouteParentStatus
	resolved, unresolved := w.routeRefs(r)
	var invalid []string
	for i, rule := range r.Spec.Rules {
		if t, bad := unsupportedFilter(rule); bad {
			name := fmt.Sprintf("rule %d", i)
			if rule.Name != nil {
				name = fmt.Sprintf("rule %d (%s)", i, *rule.Name)
			}
			invalid = append(invalid, fmt.Sprintf("%s: filter type %s is not supported by the mesh", name, t))
		}
	}
	for _, p := range r.Spec.ParentRefs {
		if !isServiceRef(p.Group, p.Kind) {
			continue
		}
		ns := refNamespace(p.Namespace, r.Namespace)
		svc := w.Services[key{ns, string(p.Name)}]
		var accepted metav1.Condition
		switch {
		case svc == nil:
			accepted = cond(string(gatewayv1.RouteConditionAccepted), false, string(gatewayv1.RouteReasonNoMatchingParent),
				fmt.Sprintf("Service %s/%s does not exist", ns, p.Name), r.Generation)
		case svc.Spec.Type == corev1.ServiceTypeExternalName:
			// The mesh routes traffic to cluster IPs; a name served by DNS
			// alone never reaches the route.
			accepted = cond(string(gatewayv1.RouteConditionAccepted), false, string(gatewayv1.RouteReasonNoMatchingParent),
				fmt.Sprintf("Service %s/%s is of type ExternalName, which the mesh does not route", ns, p.Name), r.Generation)
		case p.Port != nil && !servicePortExists(svc.Spec.Ports, int32(*p.Port)):
			accepted = cond(string(gatewayv1.RouteConditionAccepted), false, string(gatewayv1.RouteReasonNoMatchingParent),
				fmt.Sprintf("Service %s/%s has no port %d", ns, p.Name, *p.Port), r.Generation)
		default:
			accepted = cond(string(gatewayv1.RouteConditionAccepted), true, string(gatewayv1.RouteReasonAccepted),
				"Applied to traffic for Service "+ns+"/"+string(p.Name), r.Generation)
		}
		refs := cond(string(gatewayv1.RouteConditionResolvedRefs), resolved, string(gatewayv1.RouteReasonResolvedRefs), "All backendRefs resolve", r.Generation)
		if !resolved {
			refs.Reason, refs.Message = unresolved[0], unresolved[1]
		}
		conds := []metav1.Condition{accepted, refs}
		if accepted.Status == metav1.ConditionTrue && len(invalid) > 0 {
			if len(invalid) == len(r.Spec.Rules) {
				conds[0] = cond(string(gatewayv1.RouteConditionAccepted), false, string(gatewayv1.RouteReasonUnsupportedValue),
					"No rule can be applied: "+strings.Join(invalid, "; ")+"; requests its rules match are answered with 500", r.Generation)
			} else {
				conds = append(conds, cond(string(gatewayv1.RouteConditionPartiallyInvalid), true, string(gatewayv1.RouteReasonUnsupportedValue),
					"Dropped Rule(s): "+strings.Join(invalid, "; ")+"; requests they match are answered with 500 instead of skipping the filter", r.Generation))
			}
		}
		out = append(out, gatewayv1.RouteParentStatus{
			ParentRef:      p,
			ControllerName: gatewayv1.GatewayController(meshv1alpha1.ControllerName),
			Conditions:     conds,
		})
	}
	return out
}

func servicePortExists(ps []corev1.ServicePort, port int32) bool {
	for _, p := range ps {
		if p.Port == port {
			return true
		}
	}
	return false
}

// routeRefs checks every backendRef of r; on failure it returns the Gateway
// API reason and a message naming the first bad reference.
func (w *World) routeRefs(r *gatewayv1.HTTPRoute) (bool, [2]string) {
	for _, rule := range r.Spec.Rules {
		for _, b := range rule.BackendRefs {
			if ok, why := w.refOK(r.Namespace, b.BackendObjectReference); !ok {
				return false, why
			}
		}
		// A mirror to nowhere would silently mirror nothing.
		for _, f := range rule.Filters {
			if f.Type == gatewayv1.HTTPRouteFilterRequestMirror && f.RequestMirror != nil {
				if ok, why := w.refOK(r.Namespace, f.RequestMirror.BackendRef); !ok {
					why[1] = "requestMirror: " + why[1]
					return false, why
				}
			}
		}
	}
	return true, [2]string{}
}

func (w *World) refOK(ns string, b gatewayv1.BackendObjectReference) (bool, [2]string) {
	name := string(b.Name)
	if !backendIsService(b) {
		return false, [2]string{string(gatewayv1.RouteReasonInvalidKind), "backendRef " + name + " is not a Service"}
	}
	if rns := refNamespace(b.Namespace, ns); rns != ns {
		return false, [2]string{string(gatewayv1.RouteReasonRefNotPermitted),
			fmt.Sprintf("backendRef %s/%s is in another namespace; the mesh does not follow cross-namespace backendRefs", rns, name)}
	}
	svc := w.Services[key{ns, name}]
	if svc == nil {
		return false, [2]string{string(gatewayv1.RouteReasonBackendNotFound), fmt.Sprintf("Service %s/%s does not exist", ns, name)}
	}
	if b.Port != nil && !servicePortExists(svc.Spec.Ports, int32(*b.Port)) {
		return false, [2]string{string(gatewayv1.RouteReasonBackendNotFound), fmt.Sprintf("Service %s/%s has no port %d", ns, name, *b.Port)}
	}
	return true, [2]string{}
}

// SplitConditions computes a TrafficSplit's Accepted and ResolvedRefs.
func (w *World) SplitConditions(s *meshv1alpha1.TrafficSplit) []metav1.Condition {
	gen := s.Generation
	var accepted metav1.Condition
	root := w.Services[key{s.Namespace, s.Spec.Service}]
	switch {
	case root == nil:
		accepted = cond(meshv1alpha1.ConditionAccepted, false, meshv1alpha1.ReasonServiceNotFound,
			fmt.Sprintf("Service %s/%s does not exist", s.Namespace, s.Spec.Service), gen)
	case root.Spec.Type == corev1.ServiceTypeExternalName:
		accepted = cond(meshv1alpha1.ConditionAccepted, false, meshv1alpha1.ReasonInvalid,
			fmt.Sprintf("Service %s/%s is of type ExternalName, which the mesh does not route", s.Namespace, s.Spec.Service), gen)
	case w.splitOverriddenBy(root) != "":
		accepted = cond(meshv1alpha1.ConditionAccepted, false, meshv1alpha1.ReasonOverridden,
			"HTTPRoute "+w.splitOverriddenBy(root)+" targets the same Service and takes precedence", gen)
	case w.olderSplit(s) != nil:
		o := w.olderSplit(s)
		accepted = cond(meshv1alpha1.ConditionAccepted, false, meshv1alpha1.ReasonConflict,
			"TrafficSplit "+o.Name+" is older and already splits Service "+s.Spec.Service, gen)
	default:
		accepted = cond(meshv1alpha1.ConditionAccepted, true, meshv1alpha1.ReasonAccepted, "Splitting traffic for Service "+s.Spec.Service, gen)
	}
	refs := cond(meshv1alpha1.ConditionResolvedRefs, true, meshv1alpha1.ReasonResolvedRefs, "All backends resolve", gen)
	var missing []string
	for _, b := range s.Spec.Backends {
		if ok, why := w.refOK(s.Namespace, b.BackendObjectReference); !ok {
			missing = append(missing, why[1])
			continue
		}
		// A multi-port root is split port by port (see splitBackends).
		if root == nil || len(root.Spec.Ports) < 2 {
			continue
		}
		bs := w.Services[key{s.Namespace, string(b.Name)}]
		for _, rp := range root.Spec.Ports {
			if !servicePortExists(bs.Spec.Ports, rp.Port) {
				missing = append(missing, fmt.Sprintf("Service %s/%s has no port %d (a port of the root Service %s)", s.Namespace, b.Name, rp.Port, root.Name))
			}
		}
	}
	if len(missing) > 0 {
		refs = cond(meshv1alpha1.ConditionResolvedRefs, false, meshv1alpha1.ReasonBackendNotFound,
			strings.Join(missing, "; ")+"; their share of requests fails with 500", gen)
	}
	return []metav1.Condition{accepted, refs}
}

// splitOverriddenBy names a producer HTTPRoute for the Service, if any (see
// activeSplit for the precedence).
func (w *World) splitOverriddenBy(root *corev1.Service) string {
	for _, r := range w.Routes {
		if r.Namespace == root.Namespace && routeTargets(r, root) {
			return r.Namespace + "/" + r.Name
		}
	}
	return ""
}

func (w *World) olderSplit(s *meshv1alpha1.TrafficSplit) *meshv1alpha1.TrafficSplit {
	for _, o := range w.Splits {
		if o == s || (o.Namespace == s.Namespace && o.Name == s.Name) {
			return nil
		}
		if o.Namespace == s.Namespace && o.Spec.Service == s.Spec.Service {
			return o
		}
	}
	return nil
}

// PolicyConditions computes an AuthorizationPolicy's Accepted and
// ResolvedRefs.
func (w *World) PolicyConditions(ap *meshv1alpha1.AuthorizationPolicy) []metav1.Condition {
	gen := ap.Generation
	t := ap.Spec.TargetRef
	accepted := cond(meshv1alpha1.ConditionAccepted, true, meshv1alpha1.ReasonAccepted, "Enforced by the proxies of the targeted workloads", gen)
	refs := cond(meshv1alpha1.ConditionResolvedRefs, true, meshv1alpha1.ReasonResolvedRefs, "The target exists", gen)
	switch {
	case t.Kind == "Namespace" && string(t.Name) != ap.Namespace:
		accepted = cond(meshv1alpha1.ConditionAccepted, false, meshv1alpha1.ReasonInvalid,
			fmt.Sprintf("targetRef names Namespace %q; a policy can only target its own namespace (%s)", t.Name, ap.Namespace), gen)
		refs = cond(meshv1alpha1.ConditionResolvedRefs, false, meshv1alpha1.ReasonRefNotPermitted, "cross-namespace targets are not allowed", gen)
	case t.Kind == "Service" && w.Services[key{ap.Namespace, string(t.Name)}] == nil:
		refs = cond(meshv1alpha1.ConditionResolvedRefs, false, meshv1alpha1.ReasonTargetNotFound,
			fmt.Sprintf("Service %s/%s does not exist; the policy applies as soon as it does", ap.Namespace, t.Name), gen)
	}
	return []metav1.Condition{accepted, refs}
}
