package status

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/scheme"
)

// TestReferrers: a Service or EndpointSlice event requeues exactly the
// objects that refer to that Service.
func TestReferrers(t *testing.T) {
	mirror := httpRoute("a", "mirror", []gatewayv1.ParentReference{svcParent("other")})
	mirror.Spec.Rules[0].Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestMirror,
		RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{BackendRef: gatewayv1.BackendObjectReference{Name: "web", Port: ptr.To(gatewayv1.PortNumber(80))}}}}
	consumer := httpRoute("b", "consumer", []gatewayv1.ParentReference{{Group: ptr.To(gatewayv1.Group("")), Kind: ptr.To(gatewayv1.Kind("Service")), Name: "web", Namespace: ptr.To(gatewayv1.Namespace("a"))}})
	objs := []client.Object{
		httpRoute("a", "parent", []gatewayv1.ParentReference{svcParent("web")}),
		httpRoute("a", "backend", []gatewayv1.ParentReference{svcParent("other")}, backend("web", 80, 1)),
		mirror, consumer,
		httpRoute("b", "same-name-elsewhere", []gatewayv1.ParentReference{svcParent("web")}),
		httpRoute("a", "gateway", []gatewayv1.ParentReference{{Name: "web"}}, backend("web", 80, 1)),
		trafficSplit("a", "root", "web", backend("v1", 80, 1)),
		trafficSplit("a", "as-backend", "api", backend("web", 80, 1)),
		trafficSplit("b", "elsewhere", "web", backend("v1", 80, 1)),
		authzPolicy("a", "target", "Service", "web"),
		authzPolicy("a", "namespace", "Namespace", "a"),
		authzPolicy("b", "elsewhere", "Service", "web"),
	}
	c := fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(objs...).Build()
	ctx := context.Background()

	routes := referrers(c, func() *gatewayv1.HTTPRouteList { return &gatewayv1.HTTPRouteList{} }, routeItems,
		func(o client.Object, s types.NamespacedName) bool { return routeRefersTo(o.(*gatewayv1.HTTPRoute), s) })
	splits := referrers(c, func() *meshv1alpha1.TrafficSplitList { return &meshv1alpha1.TrafficSplitList{} }, splitItems,
		func(o client.Object, s types.NamespacedName) bool {
			return splitRefersTo(o.(*meshv1alpha1.TrafficSplit), s)
		})
	policies := referrers(c, func() *meshv1alpha1.AuthorizationPolicyList { return &meshv1alpha1.AuthorizationPolicyList{} }, policyItems,
		func(o client.Object, s types.NamespacedName) bool {
			return policyRefersTo(o.(*meshv1alpha1.AuthorizationPolicy), s)
		})

	web := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web"}}
	webSlice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}}}
	orphanSlice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "manual"}}
	names := func(fn func(context.Context, client.Object) []reconcile.Request, o client.Object) []string {
		var out []string
		for _, r := range fn(ctx, o) {
			out = append(out, r.Namespace+"/"+r.Name)
		}
		slices.Sort(out)
		return out
	}
	for _, o := range []client.Object{web, webSlice} {
		if got, want := names(routes, o), []string{"a/backend", "a/mirror", "a/parent", "b/consumer"}; !slices.Equal(got, want) {
			t.Errorf("routes for %T: %v, want %v", o, got, want)
		}
		if got, want := names(splits, o), []string{"a/as-backend", "a/root"}; !slices.Equal(got, want) {
			t.Errorf("splits for %T: %v, want %v", o, got, want)
		}
		if got, want := names(policies, o), []string{"a/target"}; !slices.Equal(got, want) {
			t.Errorf("policies for %T: %v, want %v", o, got, want)
		}
	}
	if got := names(routes, orphanSlice); len(got) != 0 {
		t.Errorf("an EndpointSlice of no Service requeued %v", got)
	}
}
