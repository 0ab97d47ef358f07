package status

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
)

// TestManager runs the reconcilers as the control plane does and checks the
// wiring: objects are reconciled when they change, when the Services they
// refer to appear, and when the applied counts change.
func TestManager(t *testing.T) {
	c := needEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mgr, err := ctrl.NewManager(env.Config, managerOptions())
	if err != nil {
		t.Fatal(err)
	}
	counter := newFakeCounter()
	if err := SetupWithManager(mgr, counter); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}()

	ns := newNamespace(t, c)
	create(t, c, svc(ns, "web", 80))
	rt := httpRoute(ns, "web", []gatewayv1.ParentReference{svcParent("web")}, backend("web-v2", 80, 1))
	ts := trafficSplit(ns, "canary", "api", backend("api-v1", 80, 1))
	ap := authzPolicy(ns, "api", "Service", "api")
	create(t, c, rt, ts, ap)

	reason := func(conds []metav1.Condition, typ string) string {
		if cond := findCondition(conds, typ); cond != nil {
			return cond.Reason
		}
		return ""
	}
	routeResolved := func() (string, string) {
		get(t, c, rt)
		if ours := ourParents(rt); len(ours) == 1 {
			return reason(ours[0].Conditions, "ResolvedRefs"), findCondition(ours[0].Conditions, "Accepted").Message
		}
		return "", ""
	}
	eventually(t, "route, split and policy report their missing references", func() (bool, string) {
		rr, _ := routeResolved()
		sr := reason(get(t, c, ts).Status.Conditions, "Accepted")
		pr := reason(get(t, c, ap).Status.Conditions, "ResolvedRefs")
		return rr == "BackendNotFound" && sr == meshv1alpha1.ReasonServiceNotFound && pr == meshv1alpha1.ReasonTargetNotFound,
			fmt.Sprintf("route %q split %q policy %q", rr, sr, pr)
	})

	// The Services appear: each object is requeued through its Service
	// watch, with no change to the object itself.
	create(t, c, svc(ns, "web-v2", 80), svc(ns, "api", 80), svc(ns, "api-v1", 80), slice(ns, "api"))
	eventually(t, "references resolve once the Services exist", func() (bool, string) {
		rr, _ := routeResolved()
		sr := reason(get(t, c, ts).Status.Conditions, "Accepted")
		pr := reason(get(t, c, ap).Status.Conditions, "ResolvedRefs")
		return rr == "ResolvedRefs" && sr == meshv1alpha1.ReasonAccepted && pr == meshv1alpha1.ReasonResolvedRefs,
			fmt.Sprintf("route %q split %q policy %q", rr, sr, pr)
	})

	// Proxies acknowledge: the counter signals, status follows.
	counter.set("HTTPRoute "+ns+"/web", 1, 7, 9)
	counter.set("TrafficSplit "+ns+"/canary", 1, 2, 2)
	counter.set("AuthorizationPolicy "+ns+"/api", 1, 1, 4)
	eventually(t, "applied counts reach status", func() (bool, string) {
		_, msg := routeResolved()
		sp, pp := get(t, c, ts).Status.Proxies, get(t, c, ap).Status.Proxies
		return msg == "Applied to traffic for Service "+ns+"/web; applied by 7 of 9 proxies" &&
				sp == (meshv1alpha1.ProxyAdoption{Applied: 2, Total: 2}) && pp == (meshv1alpha1.ProxyAdoption{Applied: 1, Total: 4}),
			fmt.Sprintf("route %q split %+v policy %+v", msg, sp, pp)
	})

	// A route for the split's Service overrides it, through the HTTPRoute
	// watch of the split reconciler.
	create(t, c, httpRoute(ns, "api", []gatewayv1.ParentReference{svcParent("api")}, backend("api-v1", 80, 1)))
	eventually(t, "the split reports the overriding route", func() (bool, string) {
		r := reason(get(t, c, ts).Status.Conditions, "Accepted")
		return r == meshv1alpha1.ReasonOverridden, r
	})
}

// managerOptions: no metrics listener, and controller names may repeat
// across the managers of this test binary.
func managerOptions() ctrl.Options {
	return ctrl.Options{
		Scheme:     env.Client.Scheme(),
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	}
}

// noRoutesMapper answers as an API server without Gateway API's CRDs.
type noRoutesMapper struct{ apimeta.RESTMapper }

func (m noRoutesMapper) RESTMapping(gk schema.GroupKind, versions ...string) (*apimeta.RESTMapping, error) {
	if gk.Group == gatewayv1.GroupName {
		return nil, &apimeta.NoKindMatchError{GroupKind: gk, SearchedVersions: versions}
	}
	return m.RESTMapper.RESTMapping(gk, versions...)
}

func (m noRoutesMapper) KindFor(r schema.GroupVersionResource) (schema.GroupVersionKind, error) {
	if r.Group == gatewayv1.GroupName {
		return schema.GroupVersionKind{}, &apimeta.NoResourceMatchError{PartialResource: r}
	}
	return m.RESTMapper.KindFor(r)
}

// TestManagerWithoutGatewayAPI: with no HTTPRoute API the status writers
// still start and keep TrafficSplits and policies up to date.
func TestManagerWithoutGatewayAPI(t *testing.T) {
	c := needEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := managerOptions()
	opts.MapperProvider = func(cfg *rest.Config, hc *http.Client) (apimeta.RESTMapper, error) {
		m, err := apiutil.NewDynamicRESTMapper(cfg, hc)
		return noRoutesMapper{m}, err
	}
	mgr, err := ctrl.NewManager(env.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := SetupWithManager(mgr, newFakeCounter()); err != nil {
		t.Fatalf("setting up without Gateway API: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}()

	ns := newNamespace(t, c)
	ts := trafficSplit(ns, "canary", "web", backend("web", 80, 1))
	create(t, c, svc(ns, "web", 80), ts)
	eventually(t, "the split is accepted", func() (bool, string) {
		cond := findCondition(get(t, c, ts).Status.Conditions, "Accepted")
		if cond == nil {
			return false, "no condition"
		}
		return cond.Reason == meshv1alpha1.ReasonAccepted, cond.Reason
	})
}
