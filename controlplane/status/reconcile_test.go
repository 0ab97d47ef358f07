package status

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
)

// These tests call Reconcile directly against the API server: each step is
// deterministic, with no waiting on a manager.

func TestRouteStatus(t *testing.T) {
	c := needEnv(t)
	ns := newNamespace(t, c)
	create(t, c, svc(ns, "web", 80), svc(ns, "web-v2", 80), slice(ns, "web"))
	other := newNamespace(t, c)
	create(t, c, svc(other, "web", 80))

	counter := newFakeCounter()
	r := &RouteReconciler{Client: c, Counter: counter}
	gatewayEntry := gatewayv1.RouteParentStatus{
		ParentRef:      gatewayv1.ParentReference{Name: "edge"},
		ControllerName: "example.com/gateway",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", Message: "by the gateway",
			ObservedGeneration: 1, LastTransitionTime: metav1.Now()}},
	}

	cases := []struct {
		name             string
		route            *gatewayv1.HTTPRoute
		accepted         metav1.ConditionStatus
		acceptedReason   string
		acceptedMsg      string
		resolved         metav1.ConditionStatus
		resolvedReason   string
		ourParentEntries int
	}{
		{
			name: "good",
			route: httpRoute(ns, "good", []gatewayv1.ParentReference{withPort(svcParent("web"), 80), {Name: "edge"}},
				backend("web", 80, 90), backend("web-v2", 80, 10)),
			accepted: metav1.ConditionTrue, acceptedReason: "Accepted", acceptedMsg: "applied by 2 of 3 proxies",
			resolved: metav1.ConditionTrue, resolvedReason: "ResolvedRefs", ourParentEntries: 1,
		},
		{
			name:     "missing backend",
			route:    httpRoute(ns, "ghost", []gatewayv1.ParentReference{svcParent("web")}, backend("web", 80, 1), backend("ghost", 80, 1)),
			accepted: metav1.ConditionTrue, acceptedReason: "Accepted", acceptedMsg: "applied by 0 of 0 proxies",
			resolved: metav1.ConditionFalse, resolvedReason: "BackendNotFound", ourParentEntries: 1,
		},
		{
			name: "cross-namespace backend",
			route: httpRoute(ns, "cross", []gatewayv1.ParentReference{svcParent("web")},
				gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{
					Name: "web", Namespace: ptr.To(gatewayv1.Namespace(other)), Port: ptr.To(gatewayv1.PortNumber(80)),
				}}}),
			accepted: metav1.ConditionTrue, acceptedReason: "Accepted",
			resolved: metav1.ConditionFalse, resolvedReason: "RefNotPermitted", ourParentEntries: 1,
		},
		{
			name:     "wrong parent port",
			route:    httpRoute(ns, "wrong-port", []gatewayv1.ParentReference{withPort(svcParent("web"), 81)}, backend("web", 80, 1)),
			accepted: metav1.ConditionFalse, acceptedReason: "NoMatchingParent", acceptedMsg: "has no port 81",
			resolved: metav1.ConditionTrue, resolvedReason: "ResolvedRefs", ourParentEntries: 1,
		},
		{
			name:     "wrong backend port",
			route:    httpRoute(ns, "wrong-backend-port", []gatewayv1.ParentReference{svcParent("web")}, backend("web-v2", 8080, 1)),
			accepted: metav1.ConditionTrue, acceptedReason: "Accepted",
			resolved: metav1.ConditionFalse, resolvedReason: "BackendNotFound", ourParentEntries: 1,
		},
		{
			name:     "missing parent Service",
			route:    httpRoute(ns, "no-parent", []gatewayv1.ParentReference{svcParent("nowhere")}, backend("web", 80, 1)),
			accepted: metav1.ConditionFalse, acceptedReason: "NoMatchingParent", acceptedMsg: "does not exist",
			resolved: metav1.ConditionTrue, resolvedReason: "ResolvedRefs", ourParentEntries: 1,
		},
		{
			name:             "Gateway parent only",
			route:            httpRoute(ns, "gateway-only", []gatewayv1.ParentReference{{Name: "edge"}}, backend("ghost", 80, 1)),
			ourParentEntries: 0,
		},
	}
	counter.set("HTTPRoute "+ns+"/good", 1, 2, 3)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			create(t, c, tc.route)
			// Another implementation's entry, written before ours.
			tc.route.Status.Parents = []gatewayv1.RouteParentStatus{gatewayEntry}
			if err := c.Status().Update(ctx, tc.route); err != nil {
				t.Fatal(err)
			}
			reconcileOnce(t, r, tc.route)
			got := get(t, c, tc.route)
			if len(got.Status.Parents) == 0 || got.Status.Parents[0].ControllerName != "example.com/gateway" || got.Status.Parents[0].Conditions[0].Message != "by the gateway" {
				t.Errorf("the Gateway controller's entry was changed: %+v", got.Status.Parents)
			}
			ours := ourParents(got)
			if len(ours) != tc.ourParentEntries {
				t.Fatalf("%d entries of ours, want %d: %+v", len(ours), tc.ourParentEntries, got.Status.Parents)
			}
			if len(ours) == 0 {
				return
			}
			if !isService(ours[0].ParentRef.Group, ours[0].ParentRef.Kind) {
				t.Errorf("our entry is for parentRef %+v", ours[0].ParentRef)
			}
			expect(t, tc.name, ours[0].Conditions, "Accepted", tc.accepted, tc.acceptedReason, got.Generation, tc.acceptedMsg)
			expect(t, tc.name, ours[0].Conditions, "ResolvedRefs", tc.resolved, tc.resolvedReason, got.Generation, "")
		})
	}
}

// TestGenerationAndNoRewrite: a spec change moves observedGeneration and
// keeps lastTransitionTime; a reconcile that finds nothing new writes
// nothing (the resourceVersion stays).
func TestGenerationAndNoRewrite(t *testing.T) {
	c, writes := countingClient(t)
	ctx := context.Background()
	ns := newNamespace(t, c)
	create(t, c, svc(ns, "web", 80), svc(ns, "web-v2", 80))
	counter := newFakeCounter()

	rt := httpRoute(ns, "web", []gatewayv1.ParentReference{svcParent("web")}, backend("web", 80, 1), backend("web-v2", 80, 1))
	ts := trafficSplit(ns, "split", "web-v2", backend("web", 80, 1))
	ap := authzPolicy(ns, "deny", "Service", "web")
	create(t, c, rt, ts, ap)
	routes, splits, policies := &RouteReconciler{Client: c, Counter: counter}, &SplitReconciler{Client: c, Counter: counter}, &PolicyReconciler{Client: c, Counter: counter}

	type step struct {
		name string
		r    interface {
			Reconcile(context.Context, ctrl.Request) (ctrl.Result, error)
		}
		obj   client.Object
		conds func() []metav1.Condition
		gen   func() int64 // observedGeneration where the type has one
	}
	steps := []step{
		{"HTTPRoute", routes, rt, func() []metav1.Condition { return ourParents(rt)[0].Conditions }, nil},
		{"TrafficSplit", splits, ts, func() []metav1.Condition { return ts.Status.Conditions }, func() int64 { return ts.Status.ObservedGeneration }},
		{"AuthorizationPolicy", policies, ap, func() []metav1.Condition { return ap.Status.Conditions }, func() int64 { return ap.Status.ObservedGeneration }},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			reconcileOnce(t, s.r, s.obj)
			get(t, c, s.obj)
			rv, ltt := s.obj.GetResourceVersion(), findCondition(s.conds(), "Accepted").LastTransitionTime
			before := writes.Load()
			for range 3 {
				reconcileOnce(t, s.r, s.obj)
			}
			if n := writes.Load() - before; n != 0 {
				t.Fatalf("%d status writes from reconciles that found nothing new", n)
			}
			if get(t, c, s.obj).GetResourceVersion() != rv {
				t.Fatalf("a reconcile with nothing new changed the object (resourceVersion %s → %s)", rv, s.obj.GetResourceVersion())
			}

			// Bump the generation with a spec change that keeps every
			// condition's status.
			switch o := s.obj.(type) {
			case *gatewayv1.HTTPRoute:
				o.Spec.Rules[0].BackendRefs[0].Weight = ptr.To(int32(5))
			case *meshv1alpha1.TrafficSplit:
				o.Spec.Backends[0].Weight = ptr.To(int32(7))
			case *meshv1alpha1.AuthorizationPolicy:
				o.Spec.Action = meshv1alpha1.ActionAllow
			}
			if err := c.Update(ctx, s.obj); err != nil {
				t.Fatal(err)
			}
			if s.obj.GetGeneration() != 2 {
				t.Fatalf("generation %d after a spec change", s.obj.GetGeneration())
			}
			reconcileOnce(t, s.r, s.obj)
			get(t, c, s.obj)
			for _, cond := range s.conds() {
				if cond.ObservedGeneration != 2 {
					t.Errorf("%s observedGeneration %d, want 2", cond.Type, cond.ObservedGeneration)
				}
			}
			if s.gen != nil && s.gen() != 2 {
				t.Errorf("status.observedGeneration %d, want 2", s.gen())
			}
			if got := findCondition(s.conds(), "Accepted").LastTransitionTime; !got.Equal(&ltt) {
				t.Errorf("lastTransitionTime moved from %v to %v though Accepted kept its status", ltt, got)
			}
		})
	}
}

func TestSplitStatus(t *testing.T) {
	c := needEnv(t)
	ns := newNamespace(t, c)
	create(t, c, svc(ns, "web", 80), svc(ns, "web-v1", 80), svc(ns, "web-v2", 80))
	counter := newFakeCounter()
	r := &SplitReconciler{Client: c, Counter: counter}

	canary := trafficSplit(ns, "canary", "web", backend("web-v1", 80, 90), backend("web-v2", 80, 10))
	create(t, c, canary)
	counter.set("TrafficSplit "+ns+"/canary", 1, 4, 5)
	reconcileOnce(t, r, canary)
	get(t, c, canary)
	expect(t, "split", canary.Status.Conditions, "Accepted", metav1.ConditionTrue, meshv1alpha1.ReasonAccepted, 1, "")
	expect(t, "split", canary.Status.Conditions, "ResolvedRefs", metav1.ConditionTrue, meshv1alpha1.ReasonResolvedRefs, 1, "")
	if p := canary.Status.Proxies; p.Applied != 4 || p.Total != 5 {
		t.Errorf("proxies %+v, want 4 of 5", p)
	}

	younger := trafficSplit(ns, "younger", "web", backend("ghost", 80, 1))
	create(t, c, younger)
	reconcileOnce(t, r, younger)
	get(t, c, younger)
	expect(t, "younger split", younger.Status.Conditions, "Accepted", metav1.ConditionFalse, meshv1alpha1.ReasonConflict, 1, "canary")
	expect(t, "younger split", younger.Status.Conditions, "ResolvedRefs", metav1.ConditionFalse, meshv1alpha1.ReasonBackendNotFound, 1, "ghost")

	orphan := trafficSplit(ns, "orphan", "nothing", backend("web", 80, 1))
	create(t, c, orphan)
	reconcileOnce(t, r, orphan)
	expect(t, "orphan split", get(t, c, orphan).Status.Conditions, "Accepted", metav1.ConditionFalse, meshv1alpha1.ReasonServiceNotFound, 1, "nothing")

	// An HTTPRoute for the same Service takes over.
	create(t, c, httpRoute(ns, "web", []gatewayv1.ParentReference{svcParent("web")}, backend("web-v2", 80, 1)))
	reconcileOnce(t, r, canary)
	get(t, c, canary)
	expect(t, "overridden split", canary.Status.Conditions, "Accepted", metav1.ConditionFalse, meshv1alpha1.ReasonOverridden, 1, "HTTPRoute "+ns+"/web")
	// The proxies dropped it: the config server reports it carried by none.
	counter.set("TrafficSplit "+ns+"/canary", 0, 0, 0)
	reconcileOnce(t, r, canary)
	if p := get(t, c, canary).Status.Proxies; p.Applied != 0 || p.Total != 0 {
		t.Errorf("proxies %+v, want 0 of 0 once overridden", p)
	}
}

func TestPolicyStatus(t *testing.T) {
	c := needEnv(t)
	ns := newNamespace(t, c)
	counter := newFakeCounter()
	r := &PolicyReconciler{Client: c, Counter: counter}

	missing := authzPolicy(ns, "missing", "Service", "later")
	whole := authzPolicy(ns, "whole", "Namespace", ns)
	elsewhere := authzPolicy(ns, "elsewhere", "Namespace", "kube-system")
	create(t, c, missing, whole, elsewhere)
	counter.set("AuthorizationPolicy "+ns+"/whole", 1, 3, 3)
	for _, p := range []*meshv1alpha1.AuthorizationPolicy{missing, whole, elsewhere} {
		reconcileOnce(t, r, p)
		get(t, c, p)
	}
	expect(t, "missing target", missing.Status.Conditions, "ResolvedRefs", metav1.ConditionFalse, meshv1alpha1.ReasonTargetNotFound, 1, "later")
	expect(t, "namespace target", whole.Status.Conditions, "Accepted", metav1.ConditionTrue, meshv1alpha1.ReasonAccepted, 1, "")
	if p := whole.Status.Proxies; p.Applied != 3 || p.Total != 3 {
		t.Errorf("proxies %+v, want 3 of 3", p)
	}
	expect(t, "other namespace", elsewhere.Status.Conditions, "Accepted", metav1.ConditionFalse, meshv1alpha1.ReasonInvalid, 1, "kube-system")
	expect(t, "other namespace", elsewhere.Status.Conditions, "ResolvedRefs", metav1.ConditionFalse, meshv1alpha1.ReasonRefNotPermitted, 1, "")

	create(t, c, svc(ns, "later", 80))
	reconcileOnce(t, r, missing)
	expect(t, "target created", get(t, c, missing).Status.Conditions, "ResolvedRefs", metav1.ConditionTrue, meshv1alpha1.ReasonResolvedRefs, 1, "")
}

// TestPartiallyInvalidClears: a condition we stop reporting is removed, not
// left stale next to the new ones.
func TestPartiallyInvalidClears(t *testing.T) {
	c := needEnv(t)
	ns := newNamespace(t, c)
	create(t, c, svc(ns, "web", 80))
	rt := httpRoute(ns, "web", []gatewayv1.ParentReference{svcParent("web")}, backend("web", 80, 1))
	rt.Spec.Rules = append(rt.Spec.Rules, gatewayv1.HTTPRouteRule{
		Matches: []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchPathPrefix), Value: ptr.To("/account")}}},
		Filters: []gatewayv1.HTTPRouteFilter{{
			Type:         gatewayv1.HTTPRouteFilterExtensionRef,
			ExtensionRef: &gatewayv1.LocalObjectReference{Group: "auth.example.com", Kind: "Policy", Name: "login"},
		}},
	})
	create(t, c, rt)
	r := &RouteReconciler{Client: c}
	reconcileOnce(t, r, rt)
	conds := ourParents(get(t, c, rt))[0].Conditions
	expect(t, "route with an ExtensionRef", conds, "PartiallyInvalid", metav1.ConditionTrue, "UnsupportedValue", 1, "Dropped Rule")
	expect(t, "route with an ExtensionRef", conds, "Accepted", metav1.ConditionTrue, "Accepted", 1, "")

	rt.Spec.Rules = rt.Spec.Rules[:1]
	if err := c.Update(context.Background(), rt); err != nil {
		t.Fatal(err)
	}
	reconcileOnce(t, r, rt)
	conds = ourParents(get(t, c, rt))[0].Conditions
	if pi := findCondition(conds, "PartiallyInvalid"); pi != nil {
		t.Errorf("PartiallyInvalid stayed after the rule was removed: %+v", pi)
	}
	expect(t, "fixed route", conds, "Accepted", metav1.ConditionTrue, "Accepted", 2, "")
}
