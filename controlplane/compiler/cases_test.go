package compiler

import (
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

type goldenCase struct {
	name  string
	objs  []any
	check func(t *testing.T, r result)
}

var (
	appWeb = map[string]string{"app": "web"}
	appV1  = map[string]string{"app": "web", "version": "v1"}
	appV2  = map[string]string{"app": "web", "version": "v2"}
)

// shopWeb is a meshed client and a Service "web" (port 80 → 8080, HTTP)
// with two meshed pods behind it.
func shopWeb() []any {
	return []any{
		namespace("shop", nil),
		service("shop", "web", "10.96.0.10", appWeb, svcPort{name: "http", port: 80, target: intstr.FromInt32(8080), app: "http"}),
		endpointSlice("shop", "web-abc", "web", map[string]int32{"http": 8080},
			ep{pod: "web-1", ip: "10.244.0.11"}, ep{pod: "web-2", ip: "10.244.0.12", ready: ptr.To(true)}),
		pod("shop", "web-1", "web", true, appV1, 8080),
		pod("shop", "web-2", "web", true, appV1, 8080),
		pod("shop", "client", "client", true, nil),
	}
}

// webVersions adds web-v1 and web-v2, each with one pod, on ports 80 and
// 9090 (port 9090 of v2 is missing on purpose for the multi-port split).
func webVersions() []any {
	return []any{
		service("shop", "web-v1", "10.96.0.11", appV1,
			svcPort{name: "http", port: 80, target: intstr.FromInt32(8080)}, svcPort{name: "admin", port: 9090, target: intstr.FromInt32(9090)}),
		service("shop", "web-v2", "10.96.0.12", appV2, svcPort{name: "http", port: 80, target: intstr.FromInt32(8080)}),
		endpointSlice("shop", "web-v1-a", "web-v1", map[string]int32{"http": 8080, "admin": 9090}, ep{pod: "web-1", ip: "10.244.0.11"}),
		endpointSlice("shop", "web-v2-a", "web-v2", map[string]int32{"http": 8080}, ep{pod: "web-3", ip: "10.244.0.13"}),
		pod("shop", "web-3", "web", true, appV2, 8080),
	}
}

func goldenCases() []goldenCase {
	return []goldenCase{
		{
			name: "plain-service",
			objs: []any{
				shopWeb(),
				// Not ready, an FQDN slice, a UDP port and an ExternalName
				// Service: none of them reaches a snapshot.
				endpointSlice("shop", "web-def", "web", map[string]int32{"http": 8080}, ep{pod: "web-9", ip: "10.244.0.19", ready: ptr.To(false)}),
				service("shop", "dns", "10.96.0.53", nil, svcPort{name: "dns", port: 53, udp: true}, svcPort{name: "dns-tcp", port: 53}),
				externalName("shop", "ext"),
				// A second Service for the same pods with another hint: the
				// first by name wins, whatever the map order.
				service("shop", "web-z", "10.96.0.19", appWeb, svcPort{name: "h2", port: 80, target: intstr.FromInt32(8080), app: "kubernetes.io/h2c"}),
			},
			check: func(t *testing.T, r result) {
				s := proxy(t, r, "shop/client")
				p := outPort(t, s, "shop", "web", 80)
				if p.Protocol != meshconfig.ProtocolHTTP1 {
					t.Errorf("protocol %q, want HTTP/1 from appProtocol http", p.Protocol)
				}
				want := []string{"10.244.0.11:8080 spiffe://cluster.local/ns/shop/sa/web", "10.244.0.12:8080 spiffe://cluster.local/ns/shop/sa/web"}
				if got := addresses(p.DefaultBackends[0]); !slices.Equal(got, want) {
					t.Errorf("endpoints %v, want %v (ready ones only, with identities)", got, want)
				}
				if dns := outService(t, s, "shop", "dns"); len(dns.Ports) != 1 || dns.Ports[0].Name != "dns-tcp" {
					t.Errorf("dns ports %+v, want only the TCP one", dns.Ports)
				}
				for _, svc := range s.Outbound.Services {
					if svc.Name == "ext" {
						t.Error("an ExternalName Service reached the snapshot")
					}
				}
				in := proxy(t, r, "shop/web-1").Inbound
				if len(in.Ports) != 1 || in.Ports[0].Port != 8080 || in.Ports[0].Protocol != meshconfig.ProtocolHTTP1 {
					t.Errorf("inbound ports %+v, want 8080 HTTP/1 (hint from the Service)", in.Ports)
				}
			},
		},
		{
			name: "httproute",
			objs: []any{shopWeb(), webVersions(), httpRouteFull()},
			check: func(t *testing.T, r result) {
				p := outPort(t, proxy(t, r, "shop/client"), "shop", "web", 80)
				if len(p.Routes) != 1 || len(p.Routes[0].Rules) != 4 {
					t.Fatalf("routes %+v, want one route with four rules", p.Routes)
				}
				rt := p.Routes[0]
				if rt.Source != "HTTPRoute shop/web" || rt.Generation != 3 || !rt.CreationTimestamp.Equal(t0.Add(5*60e9)) {
					t.Errorf("route source %q gen %d created %v", rt.Source, rt.Generation, rt.CreationTimestamp)
				}
				canary := rt.Rules[0]
				if got := backendNames(canary.Backends); !slices.Equal(got, []string{"shop/web-v1:90", "shop/web-v2:10"}) {
					t.Errorf("weighted backends %v", got)
				}
				if canary.Timeouts == nil || canary.Timeouts.Request.D().String() != "10s" || canary.Timeouts.BackendRequest.D().String() != "2s" {
					t.Errorf("timeouts %+v", canary.Timeouts)
				}
				if canary.Retry == nil || canary.Retry.Attempts != 3 || !slices.Equal(canary.Retry.Codes, []int{502, 503}) || canary.Retry.Backoff.D().String() != "100ms" {
					t.Errorf("retry %+v", canary.Retry)
				}
				noRetry := rt.Rules[1]
				if noRetry.Retry != nil {
					t.Errorf("attempts: 0 compiled to %+v, want no retry", noRetry.Retry)
				}
				for _, f := range noRetry.Filters {
					if f.Type == meshconfig.FilterRequestMirror {
						t.Errorf("a 0%% mirror compiled to %+v, want it dropped", f.RequestMirror)
					}
				}
				redirect := rt.Rules[2]
				if len(redirect.Backends) != 0 {
					t.Errorf("redirect rule has backends %v", backendNames(redirect.Backends))
				}
				self := rt.Rules[3]
				if got := backendNames(self.Backends); !slices.Equal(got, []string{"shop/web:1"}) {
					t.Errorf("a rule with no backendRefs goes to %v, want the parent Service (GAMMA)", got)
				}
				wantCondition(t, r, "HTTPRoute shop/web", "Accepted", metav1.ConditionTrue, "Accepted")
				wantCondition(t, r, "HTTPRoute shop/web", "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs")
				if src := r.Proxies["shop/client"].Sources; src["HTTPRoute shop/web"] != 3 {
					t.Errorf("sources %v, want HTTPRoute shop/web at generation 3", src)
				}
			},
		},
		{
			name: "trafficsplit",
			objs: []any{
				shopWeb(), webVersions(),
				// web is split on both its ports (9090 added here).
				service("shop", "web", "10.96.0.10", appWeb,
					svcPort{name: "http", port: 80, target: intstr.FromInt32(8080), app: "http"}, svcPort{name: "admin", port: 9090}),
				split("shop", "web-canary", "web", 2, 1, nil, backendRef("web-v1", 80, 90), backendRef("web-v2", 80, 10)),
				// A younger split of the same Service loses.
				split("shop", "web-other", "web", 1, 2, nil, backendRef("web-v2", 80, 1)),
				// A split with matches adds a route and keeps the default.
				service("shop", "api", "10.96.0.20", nil, svcPort{name: "http", port: 80}),
				split("shop", "api-beta", "api", 1, 3, []gatewayv1.HTTPRouteMatch{pathPrefix("/beta")}, backendRef("web-v2", 80, 1)),
			},
			check: func(t *testing.T, r result) {
				s := proxy(t, r, "shop/client")
				p80 := outPort(t, s, "shop", "web", 80)
				if got := backendNames(p80.DefaultBackends); !slices.Equal(got, []string{"shop/web-v1:90", "shop/web-v2:10"}) {
					t.Errorf("port 80 default backends %v", got)
				}
				p9090 := outPort(t, s, "shop", "web", 9090)
				if got := addresses(p9090.DefaultBackends[0]); !slices.Equal(got, []string{"10.244.0.11:9090 spiffe://cluster.local/ns/shop/sa/web"}) {
					t.Errorf("port 9090 goes to %v, want web-v1's own port 9090", got)
				}
				if got := p9090.DefaultBackends[1]; got.Name != "web-v2" || got.Weight != 10 || len(got.Endpoints) != 0 {
					t.Errorf("port 9090's web-v2 backend is %+v; web-v2 has no port 9090, so its share must fail, not go to another port", got)
				}
				wantCondition(t, r, "TrafficSplit shop/web-canary", "ResolvedRefs", metav1.ConditionFalse, meshv1alpha1.ReasonBackendNotFound)
				if msg := condition(t, r, "TrafficSplit shop/web-canary", "ResolvedRefs").Message; !strings.Contains(msg, "web-v2 has no port 9090") {
					t.Errorf("ResolvedRefs message %q does not name the missing port", msg)
				}
				api := outPort(t, s, "shop", "api", 80)
				if len(api.Routes) != 1 || api.Routes[0].Source != "TrafficSplit shop/api-beta" || backendNames(api.DefaultBackends)[0] != "shop/api:1" {
					t.Errorf("api: routes %+v default %v", api.Routes, backendNames(api.DefaultBackends))
				}
				src := r.Proxies["shop/client"].Sources
				if src["TrafficSplit shop/web-canary"] != 2 || src["TrafficSplit shop/api-beta"] != 1 {
					t.Errorf("sources %v, want both active splits", src)
				}
				if _, ok := src["TrafficSplit shop/web-other"]; ok {
					t.Error("the losing split is listed as applied")
				}
				wantCondition(t, r, "TrafficSplit shop/web-canary", "Accepted", metav1.ConditionTrue, meshv1alpha1.ReasonAccepted)
				wantCondition(t, r, "TrafficSplit shop/web-other", "Accepted", metav1.ConditionFalse, meshv1alpha1.ReasonConflict)
			},
		},
		{
			name: "httproute-overrides-split",
			objs: []any{
				shopWeb(), webVersions(),
				split("shop", "web-canary", "web", 1, 1, nil, backendRef("web-v1", 80, 50), backendRef("web-v2", 80, 50)),
				route("shop", "web", 1, 2, []gatewayv1.ParentReference{serviceParent("web", "", 80)},
					gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web-v2", 80, 1)}}),
			},
			check: func(t *testing.T, r result) {
				p := outPort(t, proxy(t, r, "shop/client"), "shop", "web", 80)
				if got := backendNames(p.DefaultBackends); !slices.Equal(got, []string{"shop/web:1"}) {
					t.Errorf("default backends %v: the overridden split still applies", got)
				}
				if len(p.Routes) != 1 || p.Routes[0].Source != "HTTPRoute shop/web" {
					t.Errorf("routes %+v, want only the HTTPRoute", p.Routes)
				}
				wantCondition(t, r, "TrafficSplit shop/web-canary", "Accepted", metav1.ConditionFalse, meshv1alpha1.ReasonOverridden)
				if _, ok := r.Proxies["shop/client"].Sources["TrafficSplit shop/web-canary"]; ok {
					t.Error("the overridden split is listed as applied")
				}
			},
		},
		{
			name: "missing-backend",
			objs: []any{
				shopWeb(),
				route("shop", "web", 1, 1, []gatewayv1.ParentReference{serviceParent("web", "", 0), gatewayParent("edge")},
					gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 80, 9), backendRef("ghost", 80, 1)}}),
				route("shop", "wrong-port", 1, 2, []gatewayv1.ParentReference{serviceParent("web", "", 81)},
					gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web", 8080, 1)}}),
				route("shop", "no-parent", 1, 3, []gatewayv1.ParentReference{serviceParent("nowhere", "", 0)}),
				externalName("shop", "ext"),
				route("shop", "external", 1, 3, []gatewayv1.ParentReference{serviceParent("ext", "", 0)}),
				route("shop", "mirror", 1, 3, []gatewayv1.ParentReference{serviceParent("dns", "", 0)}, gatewayv1.HTTPRouteRule{
					Filters: []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestMirror, RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{
						BackendRef: backendRef("shadow", 80, 1).BackendObjectReference,
					}}},
				}),
				service("shop", "dns", "10.96.0.53", nil, svcPort{name: "dns-tcp", port: 53}),
				route("shop", "cross-ns", 1, 4, []gatewayv1.ParentReference{serviceParent("web", "", 0)},
					gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{crossNamespace(backendRef("web", 80, 1), "other")}}),
				split("shop", "ghost-split", "web", 1, 5, nil, backendRef("ghost", 80, 1)),
				split("shop", "no-root", "nothing", 1, 6, nil, backendRef("web", 80, 1)),
				split("shop", "external-root", "ext", 1, 7, nil, backendRef("web", 80, 1)),
			},
			check: func(t *testing.T, r result) {
				p := outPort(t, proxy(t, r, "shop/client"), "shop", "web", 80)
				rule := p.Routes[0].Rules[0]
				if got := backendNames(rule.Backends); !slices.Equal(got, []string{"shop/web:9", "shop/ghost:1"}) || len(rule.Backends[1].Endpoints) != 0 {
					t.Errorf("backends %v: a missing backend must keep its weight with no endpoints (its share fails with 500)", got)
				}
				wantCondition(t, r, "HTTPRoute shop/web", "ResolvedRefs", metav1.ConditionFalse, string(gatewayv1.RouteReasonBackendNotFound))
				wantCondition(t, r, "HTTPRoute shop/wrong-port", "Accepted", metav1.ConditionFalse, string(gatewayv1.RouteReasonNoMatchingParent))
				wantCondition(t, r, "HTTPRoute shop/wrong-port", "ResolvedRefs", metav1.ConditionFalse, string(gatewayv1.RouteReasonBackendNotFound))
				wantCondition(t, r, "HTTPRoute shop/no-parent", "Accepted", metav1.ConditionFalse, string(gatewayv1.RouteReasonNoMatchingParent))
				wantCondition(t, r, "HTTPRoute shop/external", "Accepted", metav1.ConditionFalse, string(gatewayv1.RouteReasonNoMatchingParent))
				wantCondition(t, r, "HTTPRoute shop/mirror", "ResolvedRefs", metav1.ConditionFalse, string(gatewayv1.RouteReasonBackendNotFound))
				wantCondition(t, r, "HTTPRoute shop/cross-ns", "ResolvedRefs", metav1.ConditionFalse, string(gatewayv1.RouteReasonRefNotPermitted))
				wantCondition(t, r, "TrafficSplit shop/ghost-split", "ResolvedRefs", metav1.ConditionFalse, meshv1alpha1.ReasonBackendNotFound)
				wantCondition(t, r, "TrafficSplit shop/no-root", "Accepted", metav1.ConditionFalse, meshv1alpha1.ReasonServiceNotFound)
				wantCondition(t, r, "TrafficSplit shop/external-root", "Accepted", metav1.ConditionFalse, meshv1alpha1.ReasonInvalid)
			},
		},
		{
			name: "unsupported-filter",
			objs: []any{
				shopWeb(), webVersions(),
				route("shop", "web", 2, 1, []gatewayv1.ParentReference{serviceParent("web", "", 0)},
					gatewayv1.HTTPRouteRule{
						Name:        ptr.To(gatewayv1.SectionName("authn")),
						Matches:     []gatewayv1.HTTPRouteMatch{pathPrefix("/account")},
						Filters:     []gatewayv1.HTTPRouteFilter{extensionRef("authn")},
						BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web-v1", 80, 1)},
					},
					gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web-v1", 80, 1)}}),
				route("shop", "all-bad", 1, 2, []gatewayv1.ParentReference{serviceParent("web-v2", "", 0)},
					gatewayv1.HTTPRouteRule{Filters: []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterCORS}}}),
			},
			check: func(t *testing.T, r result) {
				p := outPort(t, proxy(t, r, "shop/client"), "shop", "web", 80)
				authn := p.Routes[0].Rules[0]
				if len(authn.Backends) != 0 || len(authn.Filters) != 0 || len(authn.Matches) != 1 {
					t.Errorf("rule with an unsupported filter compiled to %+v; want its matches and no backend (500), never the backend without the filter", authn)
				}
				if got := backendNames(p.Routes[0].Rules[1].Backends); !slices.Equal(got, []string{"shop/web-v1:1"}) {
					t.Errorf("the valid rule goes to %v", got)
				}
				wantCondition(t, r, "HTTPRoute shop/web", "Accepted", metav1.ConditionTrue, "Accepted")
				wantCondition(t, r, "HTTPRoute shop/web", "PartiallyInvalid", metav1.ConditionTrue, "UnsupportedValue")
				wantCondition(t, r, "HTTPRoute shop/all-bad", "Accepted", metav1.ConditionFalse, "UnsupportedValue")
				v2 := outPort(t, proxy(t, r, "shop/client"), "shop", "web-v2", 80)
				if len(v2.Routes[0].Rules[0].Backends) != 0 {
					t.Errorf("a fully invalid route still forwards: %+v", v2.Routes[0])
				}
			},
		},
		{
			name: "gamma-producer-consumer",
			objs: []any{
				namespace("prod", nil), namespace("team-a", nil), namespace("team-b", nil),
				service("prod", "api", "10.96.1.10", map[string]string{"app": "api"}, svcPort{name: "http", port: 80, target: intstr.FromInt32(8080)}),
				service("prod", "api-v2", "10.96.1.11", map[string]string{"app": "api", "v": "2"}, svcPort{name: "http", port: 80, target: intstr.FromInt32(8080)}),
				endpointSlice("prod", "api-x", "api", map[string]int32{"http": 8080}, ep{pod: "api-1", ip: "10.244.1.10"}),
				endpointSlice("prod", "api-v2-x", "api-v2", map[string]int32{"http": 8080}, ep{pod: "api-2", ip: "10.244.1.11"}),
				pod("prod", "api-1", "api", true, map[string]string{"app": "api"}, 8080),
				pod("prod", "api-2", "api", true, map[string]string{"app": "api", "v": "2"}, 8080),
				pod("team-a", "client", "default", true, nil),
				pod("team-b", "client", "", true, nil),
				// The producer sends /v2 to api-v2 for everyone...
				route("prod", "api", 1, 1, []gatewayv1.ParentReference{serviceParent("api", "", 80)},
					gatewayv1.HTTPRouteRule{Matches: []gatewayv1.HTTPRouteMatch{pathPrefix("/v2")}, BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("api-v2", 80, 1)}}),
				// ...but team-a adds a header to every call of its own.
				route("team-a", "api-timeouts", 1, 2, []gatewayv1.ParentReference{serviceParent("api", "prod", 80)},
					gatewayv1.HTTPRouteRule{
						Filters:  []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "x-team", Value: "a"}}}}},
						Timeouts: &gatewayv1.HTTPRouteTimeouts{Request: ptr.To(gatewayv1.Duration("500ms"))},
					}),
			},
			check: func(t *testing.T, r result) {
				a := outPort(t, proxy(t, r, "team-a/client"), "prod", "api", 80)
				if len(a.Routes) != 1 || a.Routes[0].Source != "HTTPRoute team-a/api-timeouts" {
					t.Errorf("team-a routes %+v, want only its consumer route", a.Routes)
				} else if got := backendNames(a.Routes[0].Rules[0].Backends); !slices.Equal(got, []string{"prod/api:1"}) {
					t.Errorf("consumer rule without backendRefs goes to %v, want the parent prod/api", got)
				}
				b := outPort(t, proxy(t, r, "team-b/client"), "prod", "api", 80)
				if len(b.Routes) != 1 || b.Routes[0].Source != "HTTPRoute prod/api" {
					t.Errorf("team-b routes %+v, want the producer route", b.Routes)
				}
				if _, ok := r.Proxies["team-b/client"].Sources["HTTPRoute team-a/api-timeouts"]; ok {
					t.Error("team-a's consumer route reached team-b")
				}
				wantCondition(t, r, "HTTPRoute team-a/api-timeouts", "Accepted", metav1.ConditionTrue, "Accepted")
			},
		},
		{
			name: "authorization",
			objs: []any{
				namespace("shop", map[string]string{meshv1alpha1.AnnotationDefaultPolicy: "deny"}),
				namespace("open", nil),
				namespace("bad", map[string]string{meshv1alpha1.AnnotationDefaultPolicy: "sometimes"}),
				service("shop", "web", "10.96.0.10", appWeb, svcPort{name: "http", port: 80, target: intstr.FromString("http")}, svcPort{name: "metrics", port: 9100}),
				pod("shop", "web-1", "web", true, appWeb, 8080, 9100),
				pod("shop", "db", "db", true, map[string]string{"app": "db"}, 5432),
				pod("open", "app", "app", true, nil, 8080),
				pod("bad", "app", "app", true, nil, 8080),
				namedPort(pod("shop", "web-2", "web", true, appWeb, 8080, 9100), 8080, "http"),
				policy("shop", "web-allow", 4, 1, "Service", "web", meshv1alpha1.ActionAllow,
					meshv1alpha1.AuthorizationRule{
						From: []meshv1alpha1.AuthorizationSource{
							{Identities: []meshv1alpha1.SPIFFEID{"spiffe://cluster.local/ns/shop/sa/client"}},
							{Namespaces: []string{"team-a"}, ServiceAccounts: []meshv1alpha1.ServiceAccountRef{{Name: "reporter", Namespace: "team-a"}}},
							{Identities: []meshv1alpha1.SPIFFEID{"*"}, ServiceAccounts: []meshv1alpha1.ServiceAccountRef{{Name: "prober"}}},
						},
						To: []meshv1alpha1.AuthorizationOperation{{Methods: []gatewayv1.HTTPMethod{"GET"}, Paths: []meshv1alpha1.AuthorizationPathMatch{{Type: "Exact", Value: "/healthz"}, {Value: "/api"}}}},
					}),
				policy("shop", "deny-admin", 1, 2, "Namespace", "shop", meshv1alpha1.ActionDeny,
					meshv1alpha1.AuthorizationRule{To: []meshv1alpha1.AuthorizationOperation{{Paths: []meshv1alpha1.AuthorizationPathMatch{{Type: "PathPrefix", Value: "/admin"}}}}}),
				policy("shop", "ghost", 1, 3, "Service", "ghost", meshv1alpha1.ActionAllow),
				policy("shop", "elsewhere", 1, 4, "Namespace", "open", meshv1alpha1.ActionDeny),
			},
			check: func(t *testing.T, r result) {
				web := proxy(t, r, "shop/web-2").Inbound
				if web.DefaultPolicy != meshconfig.DefaultDeny {
					t.Errorf("default policy %q, want Deny from the namespace annotation (written \"deny\")", web.DefaultPolicy)
				}
				if len(web.Policies) != 2 || web.Policies[0].Source != "shop/web-allow" || !slices.Equal(web.Policies[0].Ports, []uint16{8080, 9100}) {
					t.Fatalf("policies %+v, want web-allow on the Service's target ports, then deny-admin", web.Policies)
				}
				from := web.Policies[0].Rules[0].From
				if !slices.Equal(from[1].ServiceAccounts, []string{"team-a/reporter"}) || len(from[1].Identities) != 0 {
					t.Errorf("from[1] = %+v: serviceAccounts must stay ANDed with namespaces", from[1])
				}
				if !slices.Equal(from[2].Identities, []string{"*"}) || !slices.Equal(from[2].ServiceAccounts, []string{"shop/prober"}) {
					t.Errorf("from[2] = %+v: \"*\" AND serviceAccount prober must not widen to any identity", from[2])
				}
				// web-1 has no port named http, so the Service selects it on
				// 9100 only.
				if p := proxy(t, r, "shop/web-1").Inbound.Policies[0]; !slices.Equal(p.Ports, []uint16{9100}) {
					t.Errorf("web-1 policy ports %v, want [9100]", p.Ports)
				}
				db := proxy(t, r, "shop/db").Inbound
				if len(db.Policies) != 1 || db.Policies[0].Source != "shop/deny-admin" {
					t.Errorf("db policies %+v, want only the namespace-wide deny", db.Policies)
				}
				if got := proxy(t, r, "open/app").Inbound; got.DefaultPolicy != meshconfig.DefaultAllow || len(got.Policies) != 0 {
					t.Errorf("open/app inbound %+v: a policy in shop must not reach another namespace", got)
				}
				if got := proxy(t, r, "bad/app").Inbound.DefaultPolicy; got != meshconfig.DefaultAllow {
					t.Errorf("an invalid annotation gave %q, want the mesh default", got)
				}
				if got := r.Proxies["shop/web-2"].Sources["AuthorizationPolicy shop/web-allow"]; got != 4 {
					t.Errorf("sources %v", r.Proxies["shop/web-2"].Sources)
				}
				wantCondition(t, r, "AuthorizationPolicy shop/web-allow", "ResolvedRefs", metav1.ConditionTrue, meshv1alpha1.ReasonResolvedRefs)
				wantCondition(t, r, "AuthorizationPolicy shop/ghost", "ResolvedRefs", metav1.ConditionFalse, meshv1alpha1.ReasonTargetNotFound)
				wantCondition(t, r, "AuthorizationPolicy shop/elsewhere", "Accepted", metav1.ConditionFalse, meshv1alpha1.ReasonInvalid)
			},
		},
		{
			name: "unmeshed-pods",
			objs: []any{
				namespace("legacy", nil),
				service("legacy", "db", "10.96.2.10", map[string]string{"app": "db"}, svcPort{name: "pg", port: 5432, app: "postgresql"}),
				endpointSlice("legacy", "db-x", "db", map[string]int32{"pg": 5432},
					ep{pod: "db-0", ip: "10.244.2.10"}, ep{ip: "192.0.2.7"}),
				pod("legacy", "db-0", "db", false, map[string]string{"app": "db"}, 5432),
				pod("legacy", "cron", "cron", false, nil),
				pod("legacy", "app", "app", true, nil, 8080),
			},
			check: func(t *testing.T, r result) {
				if got := keys(r.Proxies); !slices.Equal(got, []string{"legacy/app"}) {
					t.Errorf("snapshots for %v, want only the meshed pod", got)
				}
				p := outPort(t, proxy(t, r, "legacy/app"), "legacy", "db", 5432)
				if p.Protocol != meshconfig.ProtocolOpaque {
					t.Errorf("postgresql port is %q, want Opaque (server-first)", p.Protocol)
				}
				eps := p.DefaultBackends[0].Endpoints
				if len(eps) != 2 || eps[0].Identity != "" || eps[0].Pod != "legacy/db-0" || eps[1].Pod != "" {
					t.Errorf("endpoints %+v, want plaintext endpoints with no identity", eps)
				}
			},
		},
		{
			name: "deployment-many-pods",
			objs: []any{
				namespace("pay", nil),
				service("pay", "ledger", "10.96.3.10", map[string]string{"app": "ledger"}, svcPort{name: "grpc", port: 9000, app: "kubernetes.io/h2c"}),
				endpointSlice("pay", "ledger-1", "ledger", map[string]int32{"grpc": 9000},
					ep{pod: "ledger-b", ip: "10.244.3.12"}, ep{pod: "ledger-a", ip: "10.244.3.11"}),
				// A second slice repeats an address during a resync: it
				// must appear once.
				endpointSlice("pay", "ledger-2", "ledger", map[string]int32{"grpc": 9000},
					ep{pod: "ledger-c", ip: "10.244.3.13"}, ep{pod: "ledger-a", ip: "10.244.3.11"}),
				pod("pay", "ledger-a", "ledger", true, map[string]string{"app": "ledger"}, 9000),
				pod("pay", "ledger-b", "ledger", true, map[string]string{"app": "ledger"}, 9000),
				pod("pay", "ledger-c", "ledger-canary", true, map[string]string{"app": "ledger"}, 9000),
			},
			check: func(t *testing.T, r result) {
				p := outPort(t, proxy(t, r, "pay/ledger-a"), "pay", "ledger", 9000)
				want := []string{
					"10.244.3.11:9000 spiffe://cluster.local/ns/pay/sa/ledger",
					"10.244.3.12:9000 spiffe://cluster.local/ns/pay/sa/ledger",
					"10.244.3.13:9000 spiffe://cluster.local/ns/pay/sa/ledger-canary",
				}
				if got := addresses(p.DefaultBackends[0]); !slices.Equal(got, want) {
					t.Errorf("endpoints %v, want %v", got, want)
				}
				if p.Protocol != meshconfig.ProtocolHTTP2 {
					t.Errorf("protocol %q, want HTTP/2", p.Protocol)
				}
				a, c := r.Proxies["pay/ledger-a"], r.Proxies["pay/ledger-c"]
				if a.Version == c.Version || a.Snapshot.Identity == c.Snapshot.Identity {
					t.Error("two identities got the same snapshot version")
				}
				b := r.Proxies["pay/ledger-b"]
				if a.Version != b.Version {
					t.Error("two pods with the same identity and view got different versions")
				}
			},
		},
	}
}

func httpRouteFull() *gatewayv1.HTTPRoute {
	exact := gatewayv1.PathMatchExact
	regex := gatewayv1.HeaderMatchRegularExpression
	return route("shop", "web", 3, 5, []gatewayv1.ParentReference{serviceParent("web", "", 80)},
		gatewayv1.HTTPRouteRule{
			Name: ptr.To(gatewayv1.SectionName("canary")),
			Matches: []gatewayv1.HTTPRouteMatch{{
				Path:        &gatewayv1.HTTPPathMatch{Type: &exact, Value: ptr.To("/checkout")},
				Headers:     []gatewayv1.HTTPHeaderMatch{{Name: "x-canary", Value: "yes"}, {Type: &regex, Name: "user-agent", Value: "^curl/.*"}},
				QueryParams: []gatewayv1.HTTPQueryParamMatch{{Name: "beta", Value: "1"}},
				Method:      ptr.To(gatewayv1.HTTPMethodPost),
			}},
			Filters: []gatewayv1.HTTPRouteFilter{
				{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{
					Set: []gatewayv1.HTTPHeader{{Name: "x-route", Value: "canary"}}, Add: []gatewayv1.HTTPHeader{{Name: "x-via", Value: "weft"}}, Remove: []string{"x-debug"},
				}},
				{Type: gatewayv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "x-served-by", Value: "web"}}}},
				{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{
					Hostname: ptr.To(gatewayv1.PreciseHostname("web.internal")),
					Path:     &gatewayv1.HTTPPathModifier{Type: gatewayv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr.To("/v2/checkout")},
				}},
				{Type: gatewayv1.HTTPRouteFilterRequestMirror, RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{
					BackendRef: backendRef("web-v2", 80, 1).BackendObjectReference,
					Fraction:   &gatewayv1.Fraction{Numerator: 1, Denominator: ptr.To(int32(3))},
				}},
			},
			BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web-v1", 80, 90), backendRef("web-v2", 80, 10)},
			Timeouts:    &gatewayv1.HTTPRouteTimeouts{Request: ptr.To(gatewayv1.Duration("10s")), BackendRequest: ptr.To(gatewayv1.Duration("2s"))},
			Retry:       &gatewayv1.HTTPRouteRetry{Codes: []gatewayv1.HTTPRouteRetryStatusCode{502, 503}, Attempts: ptr.To(3), Backoff: ptr.To(gatewayv1.Duration("100ms"))},
		},
		gatewayv1.HTTPRouteRule{
			Matches: []gatewayv1.HTTPRouteMatch{pathPrefix("/static")},
			Filters: []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestMirror, RequestMirror: &gatewayv1.HTTPRequestMirrorFilter{
				BackendRef: backendRef("web-v2", 80, 1).BackendObjectReference, Percent: ptr.To(int32(0)),
			}}},
			BackendRefs: []gatewayv1.HTTPBackendRef{backendRef("web-v1", 80, 1)},
			Retry:       &gatewayv1.HTTPRouteRetry{Attempts: ptr.To(0)},
		},
		gatewayv1.HTTPRouteRule{
			Matches: []gatewayv1.HTTPRouteMatch{pathPrefix("/old")},
			Filters: []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gatewayv1.HTTPRequestRedirectFilter{
				Scheme: ptr.To("https"), Hostname: ptr.To(gatewayv1.PreciseHostname("shop.example")), Port: ptr.To(gatewayv1.PortNumber(8443)), StatusCode: ptr.To(301),
				Path: &gatewayv1.HTTPPathModifier{Type: gatewayv1.FullPathHTTPPathModifier, ReplaceFullPath: ptr.To("/new")},
			}}},
		},
		gatewayv1.HTTPRouteRule{},
	)
}

func crossNamespace(b gatewayv1.HTTPBackendRef, ns string) gatewayv1.HTTPBackendRef {
	b.Namespace = ptr.To(gatewayv1.Namespace(ns))
	return b
}

func extensionRef(name string) gatewayv1.HTTPRouteFilter {
	return gatewayv1.HTTPRouteFilter{
		Type:         gatewayv1.HTTPRouteFilterExtensionRef,
		ExtensionRef: &gatewayv1.LocalObjectReference{Group: "auth.example.com", Kind: "Policy", Name: gatewayv1.ObjectName(name)},
	}
}
