package authz

import (
	"fmt"
	"strings"
	"testing"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

const (
	td       = "cluster.local"
	frontend = "spiffe://cluster.local/ns/shop/sa/frontend"
	admin    = "spiffe://cluster.local/ns/ops/sa/admin"
	foreign  = "spiffe://other.example/ns/shop/sa/frontend"
)

func allow(src string, ports []uint16, rules ...meshconfig.AuthorizationRule) meshconfig.AuthorizationPolicy {
	return meshconfig.AuthorizationPolicy{Source: src, Action: meshconfig.ActionAllow, Ports: ports, Rules: rules}
}

func deny(src string, ports []uint16, rules ...meshconfig.AuthorizationRule) meshconfig.AuthorizationPolicy {
	return meshconfig.AuthorizationPolicy{Source: src, Action: meshconfig.ActionDeny, Ports: ports, Rules: rules}
}

func prefix(v string) meshconfig.PathMatch {
	return meshconfig.PathMatch{Type: meshconfig.MatchPathPrefix, Value: v}
}
func exact(v string) meshconfig.PathMatch {
	return meshconfig.PathMatch{Type: meshconfig.MatchExact, Value: v}
}

func mustCompile(t testing.TB, def meshconfig.DefaultPolicy, ps ...meshconfig.AuthorizationPolicy) *Engine {
	t.Helper()
	e, err := Compile(&meshconfig.Inbound{DefaultPolicy: def, Policies: ps}, td)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func httpReq(port uint16, peer, method, path string) Request {
	return Request{Port: port, Peer: peer, HTTP: true, Method: method, Path: path}
}

func tcpReq(port uint16, peer string) Request { return Request{Port: port, Peer: peer} }

func TestDecide(t *testing.T) {
	fromNS := func(ns ...string) []meshconfig.Source { return []meshconfig.Source{{Namespaces: ns}} }
	fromID := func(ids ...string) []meshconfig.Source { return []meshconfig.Source{{Identities: ids}} }
	unauth := []meshconfig.Source{{Unauthenticated: true}}

	cases := []struct {
		name   string
		def    meshconfig.DefaultPolicy
		ps     []meshconfig.AuthorizationPolicy
		req    Request
		allow  bool
		reason Reason
	}{
		{"no policy, empty default allows", "", nil, httpReq(80, "", "GET", "/"), true, ReasonDefaultAllow},
		{"no policy, default deny", meshconfig.DefaultDeny, nil, httpReq(80, frontend, "GET", "/"), false, ReasonDefaultDeny},
		{"default authenticated, mesh caller", meshconfig.DefaultAuthenticated, nil, httpReq(80, frontend, "GET", "/"), true, ReasonDefaultAuthenticated},
		{"default authenticated, plaintext caller", meshconfig.DefaultAuthenticated, nil, tcpReq(80, ""), false, ReasonUnauthenticated},
		{"allow by identity", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{From: fromID(frontend)})}, httpReq(80, frontend, "GET", "/"), true, ReasonAllowPolicy},
		{"allow policy present, other identity denied", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{From: fromID(frontend)})}, httpReq(80, admin, "GET", "/"), false, ReasonNoAllowMatch},
		{"allow * needs an identity", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{From: fromID("*")})}, httpReq(80, "", "GET", "/"), false, ReasonNoAllowMatch},
		{"allow * any identity", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{From: fromID("*")})}, httpReq(80, foreign, "GET", "/"), true, ReasonAllowPolicy},
		{"allow by namespace", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{From: fromNS("shop")})}, httpReq(80, frontend, "GET", "/"), true, ReasonAllowPolicy},
		{"namespace of another trust domain does not match", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{From: fromNS("shop")})}, httpReq(80, foreign, "GET", "/"), false, ReasonNoAllowMatch},
		{"namespace of a non-workload ID does not match", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{From: fromNS("shop")})}, httpReq(80, "spiffe://cluster.local/ns/shop/sa/x/extra", "GET", "/"), false, ReasonNoAllowMatch},
		{"service account", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{From: []meshconfig.Source{{ServiceAccounts: []string{"ops/admin"}}}})}, httpReq(80, admin, "GET", "/"), true, ReasonAllowPolicy},
		{"service account in other namespace", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{From: []meshconfig.Source{{ServiceAccounts: []string{"shop/admin"}}}})}, httpReq(80, admin, "GET", "/"), false, ReasonNoAllowMatch},
		{"fields of a source are ANDed", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{From: []meshconfig.Source{{Identities: []string{frontend}, Namespaces: []string{"ops"}}}})}, httpReq(80, frontend, "GET", "/"), false, ReasonNoAllowMatch},
		{"unauthenticated source", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{From: unauth})}, httpReq(80, "", "GET", "/"), true, ReasonAllowPolicy},
		{"unauthenticated source is not a mesh caller", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{From: unauth})}, httpReq(80, frontend, "GET", "/"), false, ReasonNoAllowMatch},
		{"deny wins over allow", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{From: fromID(frontend)}),
			deny("shop/d", nil, meshconfig.AuthorizationRule{From: fromNS("shop")})}, httpReq(80, frontend, "GET", "/"), false, ReasonDenyPolicy},
		{"deny only: unmatched falls to default", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			deny("shop/d", nil, meshconfig.AuthorizationRule{From: fromNS("ops")})}, httpReq(80, frontend, "GET", "/"), true, ReasonDefaultAllow},
		{"deny only: default deny still applies", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			deny("shop/d", nil, meshconfig.AuthorizationRule{From: fromNS("ops")})}, httpReq(80, frontend, "GET", "/"), false, ReasonDefaultDeny},
		{"allow with no rules allows nothing", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil)}, httpReq(80, frontend, "GET", "/"), false, ReasonNoAllowMatch},
		{"deny with no rules denies nothing", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			deny("shop/d", nil)}, httpReq(80, frontend, "GET", "/"), true, ReasonDefaultAllow},
		{"policy on another port does not select", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			allow("shop/a", []uint16{8080}, meshconfig.AuthorizationRule{From: fromID(admin)})}, httpReq(80, frontend, "GET", "/"), true, ReasonDefaultAllow},
		{"policy on this port selects", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			allow("shop/a", []uint16{8080}, meshconfig.AuthorizationRule{From: fromID(admin)})}, httpReq(8080, frontend, "GET", "/"), false, ReasonNoAllowMatch},
		{"port 0 marker: allow selects every port, matches nothing", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			allow("shop/a", []uint16{0}, meshconfig.AuthorizationRule{From: fromID(frontend)})}, httpReq(80, frontend, "GET", "/"), false, ReasonNoAllowMatch},
		{"operation port", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Ports: []uint16{9090}}}})}, httpReq(80, frontend, "GET", "/"), false, ReasonNoAllowMatch},
		{"method and path", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Methods: []string{"GET"}, Paths: []meshconfig.PathMatch{prefix("/api")}}}})}, httpReq(80, frontend, "GET", "/api/x"), true, ReasonAllowPolicy},
		{"prefix is segment-wise", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{prefix("/api/")}}}})}, httpReq(80, frontend, "GET", "/apix"), false, ReasonNoAllowMatch},
		{"allow path is case-sensitive", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{prefix("/api")}}}})}, httpReq(80, frontend, "GET", "/API"), false, ReasonNoAllowMatch},
		{"allow path does not skip params", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{exact("/public")}}}})}, httpReq(80, frontend, "GET", "/public;x"), false, ReasonNoAllowMatch},
		{"method case-insensitive", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			deny("shop/d", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Methods: []string{"DELETE"}}}})}, httpReq(80, frontend, "delete", "/"), false, ReasonDenyPolicy},
		{"deny path case-insensitive", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			deny("shop/d", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{prefix("/admin")}}}})}, httpReq(80, frontend, "GET", "/ADMIN/users"), false, ReasonDenyPolicy},
		{"deny path skips params", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			deny("shop/d", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{prefix("/admin/secret")}}}})}, httpReq(80, frontend, "GET", "/admin;x=1/secret;y"), false, ReasonDenyPolicy},
		{"deny exact covers a trailing slash", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			deny("shop/d", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{exact("/admin")}}}})}, httpReq(80, frontend, "GET", "/admin/"), false, ReasonDenyPolicy},
		{"deny exact is not a prefix", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			deny("shop/d", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{exact("/admin")}}}})}, httpReq(80, frontend, "GET", "/admin/x"), true, ReasonDefaultAllow},
		{"deny prefix / matches all", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			deny("shop/d", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{prefix("/")}}}})}, httpReq(80, frontend, "GET", "/x"), false, ReasonDenyPolicy},
		{"policy value is normalized too", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{exact("/a%2db")}}}})}, httpReq(80, frontend, "GET", "/a-b"), true, ReasonAllowPolicy},
		// L4: rules with HTTP conditions fail closed on opaque TCP.
		{"tcp: allow with path never matches", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{From: fromID(frontend), To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{prefix("/")}}}})}, tcpReq(80, frontend), false, ReasonNoAllowMatch},
		{"tcp: allow with method never matches", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Methods: []string{"GET"}}}})}, tcpReq(80, frontend), false, ReasonNoAllowMatch},
		{"tcp: deny with path always matches its callers", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			deny("shop/d", nil, meshconfig.AuthorizationRule{From: fromNS("shop"), To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{prefix("/admin")}}}})}, tcpReq(80, frontend), false, ReasonDenyPolicy},
		{"tcp: deny with path still needs its source", meshconfig.DefaultAllow, []meshconfig.AuthorizationPolicy{
			deny("shop/d", nil, meshconfig.AuthorizationRule{From: fromNS("ops"), To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{prefix("/admin")}}}})}, tcpReq(80, frontend), true, ReasonDefaultAllow},
		{"tcp: L4 allow", meshconfig.DefaultDeny, []meshconfig.AuthorizationPolicy{
			allow("shop/a", nil, meshconfig.AuthorizationRule{From: fromID(frontend), To: []meshconfig.Operation{{Ports: []uint16{5432}}}})}, tcpReq(5432, frontend), true, ReasonAllowPolicy},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := mustCompile(t, c.def, c.ps...)
			d := e.Decide(&c.req)
			if d.Allow != c.allow || d.Reason != c.reason {
				t.Errorf("Decide(%+v) = %+v (%s), want allow=%v reason=%s", c.req, d, d.Reason, c.allow, c.reason)
			}
			if (d.Reason == ReasonAllowPolicy || d.Reason == ReasonDenyPolicy) && d.Policy == "" {
				t.Errorf("decision by policy names no policy: %+v", d)
			}
		})
	}
}

func TestStrictRefusesUnauthenticated(t *testing.T) {
	e, err := CompileSnapshot(&meshconfig.Snapshot{MTLSMode: meshconfig.MTLSStrict, TrustDomain: td, Inbound: meshconfig.Inbound{
		DefaultPolicy: meshconfig.DefaultAllow,
		Policies:      []meshconfig.AuthorizationPolicy{allow("x", nil, meshconfig.AuthorizationRule{From: []meshconfig.Source{{Unauthenticated: true}}})},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(&Request{Port: 80}); d.Allow || d.Reason != ReasonUnauthenticated {
		t.Errorf("plaintext caller in Strict mode: %+v", d)
	}
	if d := e.Decide(&Request{Port: 80, Peer: frontend}); d.Allow {
		t.Errorf("mesh caller matched an unauthenticated-only Allow: %+v", d)
	}
}

func TestNilEngineAllows(t *testing.T) {
	var e *Engine
	if d := e.Decide(&Request{}); !d.Allow {
		t.Fatal("nil engine denied")
	}
}

func TestCompileRejects(t *testing.T) {
	bad := []meshconfig.Inbound{
		{DefaultPolicy: "Maybe"},
		{Policies: []meshconfig.AuthorizationPolicy{{Source: "x", Action: "Audit"}}},
		{Policies: []meshconfig.AuthorizationPolicy{allow("x", nil, meshconfig.AuthorizationRule{From: []meshconfig.Source{{}}})}},
		{Policies: []meshconfig.AuthorizationPolicy{allow("x", nil, meshconfig.AuthorizationRule{From: []meshconfig.Source{{Unauthenticated: true, Namespaces: []string{"a"}}}})}},
		{Policies: []meshconfig.AuthorizationPolicy{allow("x", nil, meshconfig.AuthorizationRule{From: []meshconfig.Source{{Identities: []string{"frontend"}}}})}},
		{Policies: []meshconfig.AuthorizationPolicy{allow("x", nil, meshconfig.AuthorizationRule{From: []meshconfig.Source{{ServiceAccounts: []string{"frontend"}}}})}},
		{Policies: []meshconfig.AuthorizationPolicy{allow("x", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Methods: []string{"GE T"}}}})}},
		{Policies: []meshconfig.AuthorizationPolicy{allow("x", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{prefix("admin")}}}})}},
		{Policies: []meshconfig.AuthorizationPolicy{allow("x", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{prefix("/a%2fb")}}}})}},
		{Policies: []meshconfig.AuthorizationPolicy{allow("x", nil, meshconfig.AuthorizationRule{To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{{Type: meshconfig.MatchRegex, Value: "/.*"}}}}})}},
	}
	for i, in := range bad {
		if _, err := Compile(&in, td); err == nil {
			t.Errorf("case %d: compiled %+v", i, in)
		}
	}
}

func TestParseWorkloadID(t *testing.T) {
	ns, sa, ok := ParseWorkloadID(frontend, td)
	if !ok || ns != "shop" || sa != "frontend" {
		t.Fatalf("got %q %q %v", ns, sa, ok)
	}
	for _, id := range []string{foreign, "spiffe://cluster.local/ns/shop", "spiffe://cluster.local/ns//sa/x", "spiffe://cluster.local/ns/a/sa/", "spiffe://cluster.local/sa/x/ns/y", "https://cluster.local/ns/a/sa/b"} {
		if _, _, ok := ParseWorkloadID(id, td); ok {
			t.Errorf("%q parsed", id)
		}
	}
}

// engineWith builds n rules in n/10 policies (at least one): most deny or
// allow other callers, so a decision walks them all.
func engineWith(t testing.TB, n int) *Engine {
	var ps []meshconfig.AuthorizationPolicy
	for i := 0; len(ps)*10 < n || len(ps) == 0; i++ {
		var rules []meshconfig.AuthorizationRule
		for j := 0; j < 10 && i*10+j < max(n, 1); j++ {
			rules = append(rules, meshconfig.AuthorizationRule{
				From: []meshconfig.Source{{Identities: []string{fmt.Sprintf("spiffe://cluster.local/ns/n%d/sa/s%d", i, j)}, Namespaces: []string{fmt.Sprintf("n%d", i)}}},
				To:   []meshconfig.Operation{{Methods: []string{"GET", "POST"}, Paths: []meshconfig.PathMatch{prefix(fmt.Sprintf("/p%d/%d", i, j)), exact("/x")}}},
			})
		}
		if i%2 == 0 {
			ps = append(ps, deny(fmt.Sprintf("ns/d%d", i), nil, rules...))
		} else {
			ps = append(ps, allow(fmt.Sprintf("ns/a%d", i), nil, rules...))
		}
	}
	ps = append(ps, allow("shop/frontend", nil, meshconfig.AuthorizationRule{From: []meshconfig.Source{{Namespaces: []string{"shop"}}}}))
	return mustCompile(t, meshconfig.DefaultDeny, ps...)
}

// TestDecideAllocatesNothing covers the HTTP and TCP paths at several sizes.
func TestDecideAllocatesNothing(t *testing.T) {
	for _, n := range []int{1, 100, 1000} {
		e := engineWith(t, n)
		for _, r := range []Request{httpReq(80, frontend, "GET", "/api/orders"), tcpReq(80, frontend), httpReq(80, "", "delete", "/P1/2;x")} {
			if a := testing.AllocsPerRun(200, func() { e.Decide(&r) }); a != 0 {
				t.Errorf("%d rules, %+v: %v allocations per decision", n, r, a)
			}
		}
		r := httpReq(80, frontend, "GET", "/api")
		if d := e.Decide(&r); !d.Allow || d.Policy != "shop/frontend" {
			t.Errorf("%d rules: %+v", n, d)
		}
	}
}

func TestReasonStrings(t *testing.T) {
	for r := ReasonDefaultAllow; r <= ReasonUnauthenticated; r++ {
		if s := r.String(); s == "" || s == "unknown" || strings.ContainsAny(s, " /") {
			t.Errorf("reason %d: %q", r, s)
		}
	}
}

func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		e := engineWith(b, n)
		for name, r := range map[string]Request{"http": httpReq(80, frontend, "GET", "/api/orders"), "tcp": tcpReq(80, frontend)} {
			b.Run(fmt.Sprintf("%d/%s", n, name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					e.Decide(&r)
				}
			})
		}
	}
}
