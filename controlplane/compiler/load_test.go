package compiler

import (
	"context"
	"os"
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

var env *testenv.Env

// TestMain starts an API server for TestLoad. The in-memory tests need none,
// so where the binaries are missing outside CI they still run and only
// TestLoad skips.
func TestMain(m *testing.M) {
	if _, err := testenv.AssetsDir(); err != nil && os.Getenv("CI") == "" {
		os.Exit(m.Run())
	}
	os.Exit(testenv.Main(m, testenv.Options{GatewayAPI: true}, func(e *testenv.Env) { env = e }))
}

// TestLoad reads real objects, as the API server stores them (defaults,
// generations, allocated ClusterIPs), and compiles them.
func TestLoad(t *testing.T) {
	if env == nil {
		t.Skip("no local API server: run `make envtest-assets`")
	}
	ctx := context.Background()
	c := env.Client
	ns := "load"
	create := func(o client.Object) {
		t.Helper()
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
	create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Annotations: map[string]string{meshv1alpha1.AnnotationDefaultPolicy: "Deny"}}})
	for _, name := range []string{"web", "web-v2"} {
		create(&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": name},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), AppProtocol: ptr.To("http")}},
			},
		})
	}
	for i, name := range []string{"web-a", "web-b"} {
		p := pod(ns, name, "web", i == 0, map[string]string{"app": "web"}, 8080)
		p.Spec.Containers[0].Image = "example.invalid/web"
		create(p)
	}
	client := pod(ns, "client", "client", true, nil)
	client.Spec.Containers[0].Image = "example.invalid/client"
	create(client)
	create(&discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(8080))}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.9.1"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "web-a"}},
			{Addresses: []string{"10.244.9.2"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "web-b"}},
		},
	})
	r := route(ns, "web", 0, 0, []gatewayv1.ParentReference{serviceParent("web", "", 80)},
		gatewayv1.HTTPRouteRule{
			Matches:     []gatewayv1.HTTPRouteMatch{pathPrefix("/v2")},
			BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web-v2", 80, 1)},
			Retry:       &gatewayv1.HTTPRouteRetry{Attempts: ptr.To(2), Codes: []gatewayv1.HTTPRouteRetryStatusCode{503}},
		})
	r.ObjectMeta = metav1.ObjectMeta{Namespace: ns, Name: "web"}
	create(r)
	ts := split(ns, "canary", "web", 0, 0, nil, backendRef("web-v2", 80, 1))
	ts.ObjectMeta = metav1.ObjectMeta{Namespace: ns, Name: "canary"}
	create(ts)
	ap := policy(ns, "web", 0, 0, "Service", "web", "", meshv1alpha1.AuthorizationRule{
		From: []meshv1alpha1.AuthorizationSource{{ServiceAccounts: []meshv1alpha1.ServiceAccountRef{{Name: "client"}}}},
	})
	ap.ObjectMeta = metav1.ObjectMeta{Namespace: ns, Name: "web"}
	create(ap)

	w, err := Load(ctx, c, Mesh{TrustDomain: "example.org", MTLSMode: meshconfig.MTLSStrict})
	if err != nil {
		t.Fatal(err)
	}
	res := compileAll(t, w)

	s := proxy(t, res, ns+"/client")
	web := outService(t, s, ns, "web")
	if len(web.Addresses) != 1 || web.Hosts[3] != "web.load.svc.cluster.local" {
		t.Errorf("web: addresses %v hosts %v, want the allocated ClusterIP and the default cluster domain", web.Addresses, web.Hosts)
	}
	p := web.Ports[0]
	if len(p.Routes) != 1 || p.Routes[0].Source != "HTTPRoute load/web" || p.Routes[0].Generation != 1 || p.Routes[0].CreationTimestamp.IsZero() {
		t.Fatalf("routes %+v, want the stored HTTPRoute at generation 1 with its creation time", p.Routes)
	}
	if rt := p.Routes[0].Rules[0].Retry; rt == nil || rt.Attempts != 2 {
		t.Errorf("retry %+v", rt)
	}
	want := []string{"10.244.9.1:8080 spiffe://example.org/ns/load/sa/web", "10.244.9.2:8080 "}
	if got := addresses(p.DefaultBackends[0]); !slices.Equal(got, want) {
		t.Errorf("endpoints %v, want %v (web-b is not meshed)", got, want)
	}
	wantCondition(t, res, "TrafficSplit load/canary", "Accepted", metav1.ConditionFalse, meshv1alpha1.ReasonOverridden)
	wantCondition(t, res, "HTTPRoute load/web", "Accepted", metav1.ConditionTrue, "Accepted")

	in := proxy(t, res, ns+"/web-a").Inbound
	if in.DefaultPolicy != meshconfig.DefaultDeny || len(in.Policies) != 1 {
		t.Fatalf("inbound %+v", in)
	}
	pol := in.Policies[0]
	if pol.Action != meshconfig.ActionAllow || pol.Generation != 1 || !slices.Equal(pol.Rules[0].From[0].ServiceAccounts, []string{"load/client"}) {
		t.Errorf("policy %+v: want the schema's default action Allow and the ServiceAccount in the policy's namespace", pol)
	}
	if _, ok := res.Proxies[ns+"/web-b"]; ok {
		t.Error("the unmeshed pod got a snapshot")
	}

	sw, err := LoadForStatus(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(sw.Pods) != 0 || len(sw.Services) == 0 || len(sw.Routes) != 1 || len(sw.Splits) != 1 {
		t.Errorf("LoadForStatus read %d pods, %d services, %d routes, %d splits", len(sw.Pods), len(sw.Services), len(sw.Routes), len(sw.Splits))
	}
	nsw, err := LoadForStatus(ctx, c, ns, ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(nsw.Services) != 2 || len(nsw.Routes) != 1 || len(nsw.Splits) != 1 {
		t.Errorf("LoadForStatus(%s) read %d services, %d routes, %d splits; want that namespace's 2, 1, 1", ns, len(nsw.Services), len(nsw.Routes), len(nsw.Splits))
	}
	if got, want := nsw.SplitConditions(nsw.Splits[0]), w.SplitConditions(w.Splits[0]); !reflect.DeepEqual(got, want) {
		t.Errorf("a namespace-scoped World computes %+v, the full one %+v", got, want)
	}
}
