package status

import (
	"context"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
)

// Which objects refer to a Service, so that a change to the Service (or its
// EndpointSlices) requeues them. The checks are deliberately loose (name and
// namespace only): a spurious reconcile writes nothing, a missed one leaves a
// stale condition.

func isService(g *gatewayv1.Group, k *gatewayv1.Kind) bool {
	return g != nil && *g == "" && k != nil && *k == "Service"
}

func isServiceBackend(r gatewayv1.BackendObjectReference) bool {
	return (r.Group == nil || *r.Group == "") && (r.Kind == nil || *r.Kind == "Service")
}

func ns(n *gatewayv1.Namespace, def string) string {
	if n == nil || *n == "" {
		return def
	}
	return string(*n)
}

// hasServiceParent: the route is one of ours to report on.
func hasServiceParent(r *gatewayv1.HTTPRoute) bool {
	for _, p := range r.Spec.ParentRefs {
		if isService(p.Group, p.Kind) {
			return true
		}
	}
	return false
}

// hasOurParentStatus: we reported on it before, and may have to take that
// back.
func hasOurParentStatus(r *gatewayv1.HTTPRoute) bool {
	for _, p := range r.Status.Parents {
		if p.ControllerName == meshv1alpha1.ControllerName {
			return true
		}
	}
	return false
}

func routeRefersTo(r *gatewayv1.HTTPRoute, svc types.NamespacedName) bool {
	for _, p := range r.Spec.ParentRefs {
		if isService(p.Group, p.Kind) && string(p.Name) == svc.Name && ns(p.Namespace, r.Namespace) == svc.Namespace {
			return true
		}
	}
	for _, rule := range r.Spec.Rules {
		for _, b := range rule.BackendRefs {
			if isServiceBackend(b.BackendObjectReference) && string(b.Name) == svc.Name && ns(b.Namespace, r.Namespace) == svc.Namespace {
				return true
			}
		}
		for _, f := range rule.Filters {
			if m := f.RequestMirror; m != nil && isServiceBackend(m.BackendRef) && string(m.BackendRef.Name) == svc.Name && ns(m.BackendRef.Namespace, r.Namespace) == svc.Namespace {
				return true
			}
		}
	}
	return false
}

func splitRefersTo(s *meshv1alpha1.TrafficSplit, svc types.NamespacedName) bool {
	if s.Namespace != svc.Namespace {
		return false
	}
	if s.Spec.Service == svc.Name {
		return true
	}
	for _, b := range s.Spec.Backends {
		if string(b.Name) == svc.Name {
			return true
		}
	}
	return false
}

func policyRefersTo(p *meshv1alpha1.AuthorizationPolicy, svc types.NamespacedName) bool {
	return p.Namespace == svc.Namespace && p.Spec.TargetRef.Kind == "Service" && string(p.Spec.TargetRef.Name) == svc.Name
}

// serviceOf names the Service an object event concerns: the Service itself,
// or the owner of an EndpointSlice.
func serviceOf(o client.Object) (types.NamespacedName, bool) {
	if es, ok := o.(*discoveryv1.EndpointSlice); ok {
		name := es.Labels[discoveryv1.LabelServiceName]
		return types.NamespacedName{Namespace: es.Namespace, Name: name}, name != ""
	}
	return types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}, true
}

// referrers maps a Service or EndpointSlice event to the objects of list
// that refer to the Service. A List error is logged: the periodic resync
// and the objects' own events still converge.
func referrers[L client.ObjectList](c client.Reader, newList func() L, items func(L) []client.Object, refers func(client.Object, types.NamespacedName) bool) func(context.Context, client.Object) []reconcile.Request {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		svc, ok := serviceOf(o)
		if !ok {
			return nil
		}
		l := newList()
		if err := c.List(ctx, l); err != nil {
			logf.FromContext(ctx).Error(err, "Listing referrers of a Service", "service", svc)
			return nil
		}
		var out []reconcile.Request
		for _, it := range items(l) {
			if refers(it, svc) {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(it)})
			}
		}
		return out
	}
}

// all maps any event to every object of list: the applied counts changed.
func all[L client.ObjectList](c client.Reader, newList func() L, items func(L) []client.Object) func(context.Context, client.Object) []reconcile.Request {
	return func(ctx context.Context, _ client.Object) []reconcile.Request {
		l := newList()
		if err := c.List(ctx, l); err != nil {
			logf.FromContext(ctx).Error(err, "Listing objects to refresh their applied counts")
			return nil
		}
		var out []reconcile.Request
		for _, it := range items(l) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(it)})
		}
		return out
	}
}

func routeItems(l *gatewayv1.HTTPRouteList) []client.Object {
	out := make([]client.Object, 0, len(l.Items))
	for i := range l.Items {
		if hasServiceParent(&l.Items[i]) || hasOurParentStatus(&l.Items[i]) {
			out = append(out, &l.Items[i])
		}
	}
	return out
}

func splitItems(l *meshv1alpha1.TrafficSplitList) []client.Object {
	out := make([]client.Object, 0, len(l.Items))
	for i := range l.Items {
		out = append(out, &l.Items[i])
	}
	return out
}

func policyItems(l *meshv1alpha1.AuthorizationPolicyList) []client.Object {
	out := make([]client.Object, 0, len(l.Items))
	for i := range l.Items {
		out = append(out, &l.Items[i])
	}
	return out
}
