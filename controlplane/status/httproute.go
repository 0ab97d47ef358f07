package status

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/compiler"
)

// RouteReconciler writes status.parents of HTTPRoutes for their Service
// parentRefs (GAMMA), under the controller name mesh.weft.dev/controlplane.
// Entries of other controllers (Gateways) are left exactly where they are.
type RouteReconciler struct {
	Client client.Client
	// Counter, if set, adds "applied by N of M proxies" to the Accepted
	// message: HTTPRoute status has no field of its own for it.
	Counter AppliedCounter
}

// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes/status,verbs=get;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch

// Reconcile computes the route's parents and writes them if they differ from
// what is stored.
func (r *RouteReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var route gatewayv1.HTTPRoute
	if err := r.Client.Get(ctx, req.NamespacedName, &route); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	namespaces := []string{route.Namespace}
	for _, p := range route.Spec.ParentRefs {
		if isService(p.Group, p.Kind) {
			namespaces = append(namespaces, ns(p.Namespace, route.Namespace))
		}
	}
	w, err := compiler.LoadForStatus(ctx, r.Client, namespaces...)
	if err != nil {
		return ctrl.Result{}, err
	}
	want := w.RouteParents(&route)
	if r.Counter != nil && len(want) > 0 {
		applied, total := r.Counter.Applied(Source("HTTPRoute", &route), route.Generation)
		for i := range want {
			withCount(want[i].Conditions, applied, total)
		}
	}
	parents := mergeParents(route.Status.Parents, want)
	if equality.Semantic.DeepEqual(route.Status.Parents, parents) {
		return ctrl.Result{}, nil
	}
	// parents is one atomic list shared with Gateway controllers: the
	// resourceVersion in the patch makes a concurrent write fail with a
	// conflict (and a requeue) instead of dropping their entries.
	patch := client.MergeFromWithOptions(route.DeepCopy(), client.MergeFromWithOptimisticLock{})
	route.Status.Parents = parents
	if err := r.Client.Status().Patch(ctx, &route, patch); err != nil {
		return requeueOnConflict(ctx, err, "HTTPRoute", req)
	}
	logf.FromContext(ctx).V(1).Info("Updated HTTPRoute status", "httproute", req.NamespacedName, "parents", len(want))
	return ctrl.Result{}, nil
}

// withCount appends the applied count to a True Accepted condition.
func withCount(conds []metav1.Condition, applied, total int) {
	for i := range conds {
		if conds[i].Type == string(gatewayv1.RouteConditionAccepted) && conds[i].Status == metav1.ConditionTrue {
			conds[i].Message += "; " + appliedMessage(applied, total)
		}
	}
}

// mergeParents replaces our entries in have with want, in place, keeping
// lastTransitionTime of unchanged conditions. Entries of other controllers
// keep their position, so two controllers that both preserve order never
// rewrite each other's work in a loop. The result is never nil: parents is
// a required field.
func mergeParents(have, want []gatewayv1.RouteParentStatus) []gatewayv1.RouteParentStatus {
	out := make([]gatewayv1.RouteParentStatus, 0, len(have)+len(want))
	used := make([]bool, len(want))
	for _, h := range have {
		if h.ControllerName != meshv1alpha1.ControllerName {
			out = append(out, *h.DeepCopy())
			continue
		}
		for i, w := range want {
			if !used[i] && equality.Semantic.DeepEqual(h.ParentRef, w.ParentRef) {
				used[i] = true
				w := *w.DeepCopy()
				w.Conditions = mergeConditions(h.Conditions, w.Conditions)
				out = append(out, w)
				break
			}
		}
	}
	for i, w := range want {
		if !used[i] {
			w := *w.DeepCopy()
			w.Conditions = mergeConditions(nil, w.Conditions)
			out = append(out, w)
		}
	}
	return out
}

// SetupWithManager watches HTTPRoutes with a Service parent (or one we
// reported on), the Services and EndpointSlices they refer to, and, if
// counts is not nil, count changes.
func (r *RouteReconciler) SetupWithManager(mgr ctrl.Manager, counts <-chan event.GenericEvent) error {
	c := mgr.GetClient()
	newList := func() *gatewayv1.HTTPRouteList { return &gatewayv1.HTTPRouteList{} }
	refers := func(o client.Object, svc types.NamespacedName) bool {
		return routeRefersTo(o.(*gatewayv1.HTTPRoute), svc)
	}
	toRoutes := handler.EnqueueRequestsFromMapFunc(referrers(c, newList, routeItems, refers))
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		rt, ok := o.(*gatewayv1.HTTPRoute)
		return ok && (hasServiceParent(rt) || hasOurParentStatus(rt))
	})
	b := ctrl.NewControllerManagedBy(mgr).
		Named("weft-status-httproute").
		WithOptions(controllerOptions()).
		For(&gatewayv1.HTTPRoute{}, builder.WithPredicates(ours)).
		Watches(&corev1.Service{}, toRoutes).
		Watches(&discoveryv1.EndpointSlice{}, toRoutes)
	if counts != nil {
		b = b.WatchesRawSource(source.Channel(counts, handler.EnqueueRequestsFromMapFunc(all(c, newList, routeItems))))
	}
	return b.Complete(r)
}
