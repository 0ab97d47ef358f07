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
	"sigs.k8s.io/controller-runtime/pkg/source"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/compiler"
)

// PolicyReconciler writes AuthorizationPolicy status: Accepted, ResolvedRefs
// (the targeted Service exists), observedGeneration and the proxies of the
// targeted workloads that enforce it.
type PolicyReconciler struct {
	Client  client.Client
	Counter AppliedCounter
}

// +kubebuilder:rbac:groups=mesh.weft.dev,resources=authorizationpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=authorizationpolicies/status,verbs=get;patch

// Reconcile writes the policy's status if it changed.
func (r *PolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var p meshv1alpha1.AuthorizationPolicy
	if err := r.Client.Get(ctx, req.NamespacedName, &p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	w, err := compiler.LoadForStatus(ctx, r.Client, p.Namespace)
	if err != nil {
		return ctrl.Result{}, err
	}
	want := p.Status.DeepCopy()
	want.ObservedGeneration = p.Generation
	want.Conditions = mergeConditions(p.Status.Conditions, w.PolicyConditions(&p))
	if r.Counter != nil {
		want.Proxies = adoption(r.Counter, Source("AuthorizationPolicy", &p), p.Generation)
	}
	if equality.Semantic.DeepEqual(p.Status, *want) {
		return ctrl.Result{}, nil
	}
	patch := client.MergeFromWithOptions(p.DeepCopy(), client.MergeFromWithOptimisticLock{})
	p.Status = *want
	if err := r.Client.Status().Patch(ctx, &p, patch); err != nil {
		return requeueOnConflict(ctx, err, "AuthorizationPolicy", req)
	}
	logf.FromContext(ctx).V(1).Info("Updated AuthorizationPolicy status", "authorizationpolicy", req.NamespacedName, "generation", p.Generation)
	return ctrl.Result{}, nil
}

// SetupWithManager watches AuthorizationPolicies, the Services they target
// (and their EndpointSlices), and count changes.
func (r *PolicyReconciler) SetupWithManager(mgr ctrl.Manager, counts <-chan event.GenericEvent) error {
	c := mgr.GetClient()
	newList := func() *meshv1alpha1.AuthorizationPolicyList { return &meshv1alpha1.AuthorizationPolicyList{} }
	refers := func(o client.Object, svc types.NamespacedName) bool {
		return policyRefersTo(o.(*meshv1alpha1.AuthorizationPolicy), svc)
	}
	toPolicies := handler.EnqueueRequestsFromMapFunc(referrers(c, newList, policyItems, refers))
	b := ctrl.NewControllerManagedBy(mgr).
		Named("weft-status-authorizationpolicy").
		WithOptions(controllerOptions()).
		For(&meshv1alpha1.AuthorizationPolicy{}).
		Watches(&corev1.Service{}, toPolicies).
		Watches(&discoveryv1.EndpointSlice{}, toPolicies)
	if counts != nil {
		b = b.WatchesRawSource(source.Channel(counts, handler.EnqueueRequestsFromMapFunc(all(c, newList, policyItems))))
	}
	return b.Complete(r)
}
