package route

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

// Helpers to write routes the way the Gateway API examples read.

func prefix(v string) *meshconfig.PathMatch {
	return &meshconfig.PathMatch{Type: meshconfig.MatchPathPrefix, Value: v}
}

func exact(v string) *meshconfig.PathMatch {
	return &meshconfig.PathMatch{Type: meshconfig.MatchExact, Value: v}
}

func regex(v string) *meshconfig.PathMatch {
	return &meshconfig.PathMatch{Type: meshconfig.MatchRegex, Value: v}
}

func hdr(name, value string) meshconfig.ValueMatch {
	return meshconfig.ValueMatch{Type: meshconfig.MatchExact, Name: name, Value: value}
}

func hdrRe(name, value string) meshconfig.ValueMatch {
	return meshconfig.ValueMatch{Type: meshconfig.MatchRegex, Name: name, Value: value}
}

// rule names itself so tests can tell which one matched.
func rrule(name string, ms ...meshconfig.RouteMatch) meshconfig.RouteRule {
	return meshconfig.RouteRule{Name: name, Matches: ms}
}

func httpRoute(source string, rules ...meshconfig.RouteRule) meshconfig.Route {
	return meshconfig.Route{Source: "HTTPRoute " + source, Rules: rules}
}

func noTransport(meshconfig.Endpoint) http.RoundTripper { return http.DefaultTransport }

func mustCompile(t testing.TB, routes ...meshconfig.Route) *Table {
	t.Helper()
	tab, err := Compile(meshconfig.ServicePort{Port: 8080, Routes: routes}, Options{Transport: noTransport})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

type req struct {
	method, target, host string
	headers              map[string][]string
}

func (q req) build() *http.Request {
	m := q.method
	if m == "" {
		m = http.MethodGet
	}
	r := httptest.NewRequest(m, q.target, nil)
	if q.host != "" {
		r.Host = q.host
	}
	for k, vs := range q.headers {
		for _, v := range vs {
			r.Header.Add(k, v)
		}
	}
	return r
}

// matched names the rule that routes r, "default" when none does.
func matched(tab *Table, r *http.Request) string {
	if e := tab.match(r); e != nil {
		return e.rule.name
	}
	return "default"
}

func TestMatching(t *testing.T) {
	type check struct {
		req  req
		want string
	}
	tests := []struct {
		name   string
		routes []meshconfig.Route
		checks []check
	}{
		{
			// Conformance HTTPRouteMatching: two rules, "/" and "/v2".
			name: "prefix is segment-wise and longest wins",
			routes: []meshconfig.Route{httpRoute("default/matching",
				rrule("root", meshconfig.RouteMatch{Path: prefix("/")}),
				rrule("v2", meshconfig.RouteMatch{Path: prefix("/v2")}),
			)},
			checks: []check{
				{req{target: "/"}, "root"},
				{req{target: "/example"}, "root"},
				{req{target: "/v2"}, "v2"},
				{req{target: "/v2/"}, "v2"},
				{req{target: "/v2/example"}, "v2"},
				{req{target: "/v2example"}, "root"},
			},
		},
		{
			// HTTPPathMatch: "/abc", "/abc/" and "/abc/def" match prefix
			// "/abc"; "/abcd" does not; a trailing "/" on the prefix is ignored.
			name: "trailing slash on the prefix is ignored",
			routes: []meshconfig.Route{httpRoute("default/slash",
				rrule("abc", meshconfig.RouteMatch{Path: prefix("/abc/")}),
			)},
			checks: []check{
				{req{target: "/abc"}, "abc"},
				{req{target: "/abc/"}, "abc"},
				{req{target: "/abc/def"}, "abc"},
				{req{target: "/abcd"}, "default"},
				{req{target: "/ab"}, "default"},
			},
		},
		{
			// Conformance HTTPRouteExactPathMatching.
			name: "exact path is exact",
			routes: []meshconfig.Route{httpRoute("default/exact",
				rrule("one", meshconfig.RouteMatch{Path: exact("/one")}),
				rrule("two", meshconfig.RouteMatch{Path: exact("/two")}),
			)},
			checks: []check{
				{req{target: "/one"}, "one"},
				{req{target: "/two"}, "two"},
				{req{target: "/one/"}, "default"},
				{req{target: "/one/example"}, "default"},
				{req{target: "/Two"}, "default"},
			},
		},
		{
			// HTTPRouteMatch doc example: path "/foo" AND header version: v1.
			name: "conditions of one match are ANDed, matches are ORed",
			routes: []meshconfig.Route{httpRoute("default/and-or",
				rrule("foo-v1",
					meshconfig.RouteMatch{Path: prefix("/foo"), Headers: []meshconfig.ValueMatch{hdr("version", "v1")}},
					meshconfig.RouteMatch{Path: exact("/bar")},
				),
			)},
			checks: []check{
				{req{target: "/foo", headers: map[string][]string{"Version": {"v1"}}}, "foo-v1"},
				{req{target: "/foo"}, "default"},
				{req{target: "/foo", headers: map[string][]string{"Version": {"v2"}}}, "default"},
				{req{target: "/bar"}, "foo-v1"},
			},
		},
		{
			// Conformance HTTPRouteHeaderMatching: names are
			// case-insensitive, values are not; the first of duplicate names counts.
			name: "headers",
			routes: []meshconfig.Route{httpRoute("default/headers",
				rrule("v1", meshconfig.RouteMatch{Headers: []meshconfig.ValueMatch{hdr("VERSION", "one"), hdr("version", "ignored")}}),
				rrule("re", meshconfig.RouteMatch{Headers: []meshconfig.ValueMatch{hdrRe("x-color", "(red|blue)-[0-9]+")}}),
			)},
			checks: []check{
				{req{target: "/", headers: map[string][]string{"version": {"one"}}}, "v1"},
				{req{target: "/", headers: map[string][]string{"Version": {"One"}}}, "default"},
				{req{target: "/", headers: map[string][]string{"Version": {"ignored"}}}, "default"},
				{req{target: "/", headers: map[string][]string{"X-Color": {"red-12"}}}, "re"},
				{req{target: "/", headers: map[string][]string{"X-Color": {"green-12"}}}, "default"},
				{req{target: "/", headers: map[string][]string{"X-Color": {"xred-12"}}}, "default"},
				// Repeated headers compare as their comma-joined value.
				{req{target: "/", headers: map[string][]string{"Version": {"one", "two"}}}, "default"},
			},
		},
		{
			name: "repeated header joined",
			routes: []meshconfig.Route{httpRoute("default/joined",
				rrule("both", meshconfig.RouteMatch{Headers: []meshconfig.ValueMatch{hdr("x-a", "1, 2")}}),
			)},
			checks: []check{
				{req{target: "/", headers: map[string][]string{"X-A": {"1", "2"}}}, "both"},
				{req{target: "/", headers: map[string][]string{"X-A": {"1, 2"}}}, "both"},
				{req{target: "/", headers: map[string][]string{"X-A": {"1"}}}, "default"},
			},
		},
		{
			// Conformance HTTPRouteQueryParamMatching: names are
			// case-sensitive; the first occurrence counts; values are decoded.
			name: "query params",
			routes: []meshconfig.Route{httpRoute("default/query",
				rrule("animal", meshconfig.RouteMatch{QueryParams: []meshconfig.ValueMatch{hdr("animal", "whale")}}),
				rrule("color", meshconfig.RouteMatch{QueryParams: []meshconfig.ValueMatch{hdrRe("color", "gr[ae]y")}}),
				rrule("spaced", meshconfig.RouteMatch{QueryParams: []meshconfig.ValueMatch{hdr("q", "a b&c")}}),
			)},
			checks: []check{
				{req{target: "/?animal=whale"}, "animal"},
				{req{target: "/?x=1&animal=whale"}, "animal"},
				{req{target: "/?ANIMAL=whale"}, "default"},
				{req{target: "/?animal=dolphin&animal=whale"}, "default"},
				{req{target: "/?animal=whale&animal=dolphin"}, "animal"},
				{req{target: "/?color=grey"}, "color"},
				{req{target: "/?color=gr%61y"}, "color"},
				{req{target: "/?color=green"}, "default"},
				{req{target: "/?q=a+b%26c"}, "spaced"},
				{req{target: "/?q=a%2"}, "default"},
			},
		},
		{
			name: "method",
			routes: []meshconfig.Route{httpRoute("default/method",
				rrule("post", meshconfig.RouteMatch{Method: "POST"}),
			)},
			checks: []check{
				{req{method: "POST", target: "/"}, "post"},
				{req{method: "GET", target: "/"}, "default"},
			},
		},
		{
			name: "regular expression path is anchored",
			routes: []meshconfig.Route{httpRoute("default/regex",
				rrule("users", meshconfig.RouteMatch{Path: regex("/users/[0-9]+")}),
			)},
			checks: []check{
				{req{target: "/users/42"}, "users"},
				{req{target: "/users/42/x"}, "default"},
				{req{target: "/api/users/42"}, "default"},
			},
		},
		{
			name: "hostnames compare without port and case",
			routes: []meshconfig.Route{
				{Source: "HTTPRoute default/hosts", Hostnames: []string{"api.example.com", "*.wild.example.com"}, Rules: []meshconfig.RouteRule{rrule("hosted")}},
			},
			checks: []check{
				{req{target: "/", host: "api.example.com"}, "hosted"},
				{req{target: "/", host: "API.Example.COM:8080"}, "hosted"},
				{req{target: "/", host: "a.b.wild.example.com"}, "hosted"},
				{req{target: "/", host: "wild.example.com"}, "default"},
				{req{target: "/", host: "other.example.com"}, "default"},
			},
		},
		{
			name:   "no rule matches: default backends",
			routes: []meshconfig.Route{httpRoute("default/none", rrule("only", meshconfig.RouteMatch{Path: exact("/only")}))},
			checks: []check{{req{target: "/elsewhere"}, "default"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := mustCompile(t, tt.routes...)
			for _, c := range tt.checks {
				if got := matched(tab, c.req.build()); got != c.want {
					t.Errorf("%s %s host=%q headers=%v: matched %q, want %q", c.req.method, c.req.target, c.req.host, c.req.headers, got, c.want)
				}
			}
		})
	}
}

// TestPrecedence follows the criteria listed in HTTPRouteRule.Matches, one
// case per criterion, each across rules of one route and across routes.
func TestPrecedence(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(r meshconfig.Route, ts time.Time) meshconfig.Route {
		r.CreationTimestamp = ts
		return r
	}
	tests := []struct {
		name   string
		routes []meshconfig.Route
		req    req
		want   string
	}{
		{
			name: "exact path over prefix, even a longer prefix listed first",
			routes: []meshconfig.Route{
				httpRoute("default/a", rrule("prefix", meshconfig.RouteMatch{Path: prefix("/match/exact/one")})),
				httpRoute("default/b", rrule("exact", meshconfig.RouteMatch{Path: exact("/match/exact/one")})),
			},
			req:  req{target: "/match/exact/one"},
			want: "exact",
		},
		{
			name: "longest prefix over method and headers",
			routes: []meshconfig.Route{httpRoute("default/a",
				rrule("short-with-everything", meshconfig.RouteMatch{Path: prefix("/match"), Method: "GET", Headers: []meshconfig.ValueMatch{hdr("x", "1")}}),
				rrule("long", meshconfig.RouteMatch{Path: prefix("/match/prefix")}),
			)},
			req:  req{target: "/match/prefix/one", headers: map[string][]string{"X": {"1"}}},
			want: "long",
		},
		{
			name: "method over headers",
			routes: []meshconfig.Route{httpRoute("default/a",
				rrule("headers", meshconfig.RouteMatch{Path: prefix("/"), Headers: []meshconfig.ValueMatch{hdr("x", "1"), hdr("y", "2")}}),
				rrule("method", meshconfig.RouteMatch{Path: prefix("/"), Method: "GET"}),
			)},
			req:  req{target: "/", headers: map[string][]string{"X": {"1"}, "Y": {"2"}}},
			want: "method",
		},
		{
			name: "most headers over query params",
			routes: []meshconfig.Route{
				httpRoute("default/a", rrule("query", meshconfig.RouteMatch{QueryParams: []meshconfig.ValueMatch{hdr("a", "1"), hdr("b", "2")}})),
				httpRoute("default/b", rrule("headers", meshconfig.RouteMatch{Headers: []meshconfig.ValueMatch{hdr("x", "1")}})),
			},
			req:  req{target: "/?a=1&b=2", headers: map[string][]string{"X": {"1"}}},
			want: "headers",
		},
		{
			name: "most query params",
			routes: []meshconfig.Route{httpRoute("default/a",
				rrule("one", meshconfig.RouteMatch{QueryParams: []meshconfig.ValueMatch{hdr("a", "1")}}),
				rrule("two", meshconfig.RouteMatch{QueryParams: []meshconfig.ValueMatch{hdr("a", "1"), hdr("b", "2")}}),
			)},
			req:  req{target: "/?a=1&b=2"},
			want: "two",
		},
		{
			name: "oldest route wins a tie",
			routes: []meshconfig.Route{
				at(httpRoute("default/a", rrule("newer")), t0.Add(time.Second)),
				at(httpRoute("default/b", rrule("older")), t0),
			},
			req:  req{target: "/"},
			want: "older",
		},
		{
			name: "same age: alphabetical namespace/name",
			routes: []meshconfig.Route{
				at(httpRoute("ns-b/a", rrule("ns-b")), t0),
				at(httpRoute("ns-a/z", rrule("ns-a")), t0),
			},
			req:  req{target: "/"},
			want: "ns-a",
		},
		{
			name: "without timestamps the control plane's order stands",
			routes: []meshconfig.Route{
				httpRoute("default/z", rrule("first-listed")),
				httpRoute("default/a", rrule("second-listed")),
			},
			req:  req{target: "/"},
			want: "first-listed",
		},
		{
			name: "within a route the first rule wins",
			routes: []meshconfig.Route{httpRoute("default/a",
				rrule("first", meshconfig.RouteMatch{Path: prefix("/x")}),
				rrule("second", meshconfig.RouteMatch{Path: prefix("/x")}),
			)},
			req:  req{target: "/x/y"},
			want: "first",
		},
		{
			name: "prefix characters count as written: /x/ before /x",
			routes: []meshconfig.Route{httpRoute("default/a",
				rrule("short", meshconfig.RouteMatch{Path: prefix("/x")}),
				rrule("slash", meshconfig.RouteMatch{Path: prefix("/x/")}),
			)},
			req:  req{target: "/x/y"},
			want: "slash",
		},
		{
			name: "a more specific match of a later rule beats a general one",
			routes: []meshconfig.Route{httpRoute("default/a",
				rrule("general", meshconfig.RouteMatch{}),
				rrule("specific", meshconfig.RouteMatch{Headers: []meshconfig.ValueMatch{hdr("x", "1")}}),
			)},
			req:  req{target: "/", headers: map[string][]string{"X": {"1"}}},
			want: "specific",
		},
		{
			name: "regex ranks below exact and above prefix (implementation-specific)",
			routes: []meshconfig.Route{httpRoute("default/a",
				rrule("prefix", meshconfig.RouteMatch{Path: prefix("/users")}),
				rrule("regex", meshconfig.RouteMatch{Path: regex("/users/[0-9]+")}),
				rrule("exact", meshconfig.RouteMatch{Path: exact("/users/0")}),
			)},
			req:  req{target: "/users/7"},
			want: "regex",
		},
		{
			name: "a non-matching higher-precedence entry falls through",
			routes: []meshconfig.Route{httpRoute("default/a",
				rrule("exact-post", meshconfig.RouteMatch{Path: exact("/p"), Method: "POST"}),
				rrule("prefix", meshconfig.RouteMatch{Path: prefix("/p")}),
			)},
			req:  req{target: "/p"},
			want: "prefix",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := mustCompile(t, tt.routes...)
			if got := matched(tab, tt.req.build()); got != tt.want {
				t.Fatalf("matched %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCompileRejects(t *testing.T) {
	tests := []struct {
		name  string
		route meshconfig.Route
	}{
		{"bad regex", httpRoute("d/a", rrule("r", meshconfig.RouteMatch{Path: regex("(")}))},
		{"unknown path type", httpRoute("d/a", rrule("r", meshconfig.RouteMatch{Path: &meshconfig.PathMatch{Type: "Glob", Value: "/*"}}))},
		{"filter without config", httpRoute("d/a", meshconfig.RouteRule{Filters: []meshconfig.Filter{{Type: meshconfig.FilterURLRewrite}}})},
		{"unknown filter", httpRoute("d/a", meshconfig.RouteRule{Filters: []meshconfig.Filter{{Type: "ExtensionRef"}}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Compile(meshconfig.ServicePort{Port: 80, Routes: []meshconfig.Route{tt.route}}, Options{Transport: noTransport}); err == nil {
				t.Fatal("compiled; want an error")
			}
		})
	}
}
