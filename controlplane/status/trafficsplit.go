package status

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/compiler"
)

// SplitReconciler writes TrafficSplit status: Accepted (or why not: the root
// Service is missing, an HTTPRoute overrides the split, an older split wins),
// ResolvedRefs, observedGeneration and the proxies that apply it.
type SplitReconciler struct {
	Client  client.Client
	Counter AppliedCounter
	// withoutRoutes: Gateway API is not installed, so there is no
	// HTTPRoute to watch.
	withoutRoutes bool
}

// +kubebuilder:rbac:groups=mesh.weft.dev,resources=trafficsplits,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=trafficsplits/status,verbs=get;patch

// Reconcile writes the split's status if it changed.
func (r *SplitReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var s meshv1alpha1.TrafficSplit
	if err := r.Client.Get(ctx, req.NamespacedName, &s); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	w, err := compiler.LoadForStatus(ctx, r.Client, s.Namespace)
	if err != nil {
		return ctrl.Result{}, err
	}
	want := s.Status.DeepCopy()
	want.ObservedGeneration = s.Generation
	want.Conditions = mergeConditions(s.Status.Conditions, w.SplitConditions(&s))
	if r.Counter != nil {
		want.Proxies = adoption(r.Counter, Source("TrafficSplit", &s), s.Generation)
	}
	if equality.Semantic.DeepEqual(s.Status, *want) {
		return ctrl.Result{}, nil
	}
	patch := client.MergeFromWithOptions(s.DeepCopy(), client.MergeFromWithOptimisticLock{})
	s.Status = *want
	if err := r.Client.Status().Patch(ctx, &s, patch); err != nil {
		return requeueOnConflict(ctx, err, "TrafficSplit", req)
	}
	logf.FromContext(ctx).V(1).Info("Updated TrafficSplit status", "trafficsplit", req.NamespacedName, "generation", s.Generation)
	return ctrl.Result{}, nil
}

func adoption(c AppliedCounter, src string, gen int64) meshv1alpha1.ProxyAdoption {
	applied, total := c.Applied(src, gen)
	return meshv1alpha1.ProxyAdoption{Applied: int32(applied), Total: int32(total)}
}

// SetupWithManager watches TrafficSplits, the Services and EndpointSlices
// they name, the HTTPRoutes that may override them, the other splits of the
// same Service (an older one wins), and count changes.
func (r *SplitReconciler) SetupWithManager(mgr ctrl.Manager, counts <-chan event.GenericEvent) error {
	c := mgr.GetClient()
	newList := func() *meshv1alpha1.TrafficSplitList { return &meshv1alpha1.TrafficSplitList{} }
	refers := func(o client.Object, svc types.NamespacedName) bool {
		return splitRefersTo(o.(*meshv1alpha1.TrafficSplit), svc)
	}
	toSplits := handler.EnqueueRequestsFromMapFunc(referrers(c, newList, splitItems, refers))
	b := ctrl.NewControllerManagedBy(mgr).
		Named("weft-status-trafficsplit").
		WithOptions(controllerOptions()).
		For(&meshv1alpha1.TrafficSplit{}).
		Watches(&corev1.Service{}, toSplits).
		Watches(&discoveryv1.EndpointSlice{}, toSplits).
		Watches(&meshv1alpha1.TrafficSplit{}, handler.EnqueueRequestsFromMapFunc(r.siblings(c)))
	if !r.withoutRoutes {
		b = b.Watches(&gatewayv1.HTTPRoute{}, handler.EnqueueRequestsFromMapFunc(r.splitsOfRoute(c)))
	}
	if counts != nil {
		b = b.WatchesRawSource(source.Channel(counts, handler.EnqueueRequestsFromMapFunc(all(c, newList, splitItems))))
	}
	return b.Complete(r)
}

// splitsOfRoute: splits of the Services a route is a producer route for.
func (r *SplitReconciler) splitsOfRoute(c client.Reader) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		rt, ok := o.(*gatewayv1.HTTPRoute)
		if !ok {
			return nil
		}
		var out []reconcile.Request
		for _, p := range rt.Spec.ParentRefs {
			if isService(p.Group, p.Kind) && ns(p.Namespace, rt.Namespace) == rt.Namespace {
				out = append(out, r.splitsOf(ctx, c, rt.Namespace, string(p.Name))...)
			}
		}
		return out
	}
}

// siblings: the other splits of the same root Service.
func (r *SplitReconciler) siblings(c client.Reader) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		s, ok := o.(*meshv1alpha1.TrafficSplit)
		if !ok {
			return nil
		}
		var out []reconcile.Request
		for _, q := range r.splitsOf(ctx, c, s.Namespace, s.Spec.Service) {
			if q.Name != s.Name {
				out = append(out, q)
			}
		}
		return out
	}
}

func (r *SplitReconciler) splitsOf(ctx context.Context, c client.Reader, namespace, service string) []reconcile.Request {
	var l meshv1alpha1.TrafficSplitList
	if err := c.List(ctx, &l, client.InNamespace(namespace)); err != nil {
		logf.FromContext(ctx).Error(err, "Listing TrafficSplits", "namespace", namespace)
		return nil
	}
	var out []reconcile.Request
	for i := range l.Items {
		if l.Items[i].Spec.Service == service {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&l.Items[i])})
		}
	}
	return out
}
