package route

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

// fuzzRoutes exercises every kind of condition, with prefixes chosen to
// collide at segment boundaries.
func fuzzRoutes() []meshconfig.Route {
	m := func(p *meshconfig.PathMatch, method string, h, q []meshconfig.ValueMatch) meshconfig.RouteMatch {
		return meshconfig.RouteMatch{Path: p, Method: method, Headers: h, QueryParams: q}
	}
	return []meshconfig.Route{
		httpRoute("default/a",
			rrule("root", m(prefix("/"), "", nil, nil)),
			rrule("a", m(prefix("/a"), "", nil, nil)),
			rrule("a-slash", m(prefix("/a/"), "", nil, nil)),
			rrule("ab", m(prefix("/a/b"), "POST", nil, nil)),
			rrule("ab-exact", m(exact("/a/b"), "", nil, nil)),
			rrule("a-double", m(prefix("/a//b"), "", nil, nil)),
			rrule("abc", m(prefix("/abc"), "", []meshconfig.ValueMatch{hdr("x-tenant", "t1")}, nil)),
		),
		httpRoute("default/b",
			rrule("re", m(regex("/a/[0-9]+"), "", nil, nil)),
			rrule("re-any", m(regex(".*z"), "GET", nil, []meshconfig.ValueMatch{hdr("z", "1")})),
			rrule("q", m(prefix("/q"), "", nil, []meshconfig.ValueMatch{hdr("k", "v w"), hdrRe("n", "[0-9]+")})),
			rrule("h", m(prefix("/h"), "", []meshconfig.ValueMatch{hdrRe("X-Tenant", "t[0-9]")}, nil)),
			rrule("star", m(exact("*"), "OPTIONS", nil, nil)),
		),
		{Source: "HTTPRoute default/c", Hostnames: []string{"api.example.com", "*.wild.test"}, Rules: []meshconfig.RouteRule{
			rrule("host-a", m(prefix("/a"), "", nil, nil)),
		}},
	}
}

// referenceMatch is the spec read literally: scan every entry in precedence
// order with naive definitions of each condition. The table's indexed lookup
// must agree with it on every input.
func referenceMatch(tab *Table, r *http.Request) *entry {
	path := r.URL.Path
	if path == "" {
		path = "/"
	}
	for _, e := range tab.all {
		switch e.kind {
		case pathExact:
			if path != e.path {
				continue
			}
		case pathPrefix:
			if e.path == "" {
				if !strings.HasPrefix(path, "/") {
					continue
				}
			} else if path != e.path && !strings.HasPrefix(path, e.path+"/") {
				continue
			}
		case pathRegex:
			if !e.re.MatchString(path) {
				continue
			}
		}
		if e.method != "" && e.method != r.Method {
			continue
		}
		if e.hosts != nil && !refHost(e.hosts, r.Host) {
			continue
		}
		ok := true
		for _, h := range e.headers {
			vs := r.Header.Values(h.name)
			if len(vs) == 0 || !refValue(h, strings.Join(vs, ", ")) {
				ok = false
			}
		}
		for _, q := range e.query {
			v, found, valid := refQuery(r.URL.RawQuery, q.name)
			if !found || !valid || !refValue(q, v) {
				ok = false
			}
		}
		if ok {
			return e
		}
	}
	return nil
}

func refValue(m valueMatch, v string) bool {
	if m.re != nil {
		return m.re.MatchString(v)
	}
	return v == m.exact
}

func refQuery(raw, name string) (value string, found, valid bool) {
	for _, pair := range strings.Split(raw, "&") {
		k, v, _ := strings.Cut(pair, "=")
		dk, err := url.QueryUnescape(k)
		if err != nil || dk != name {
			continue
		}
		dv, err := url.QueryUnescape(v)
		return dv, true, err == nil
	}
	return "", false, false
}

func refHost(hosts []hostMatch, host string) bool {
	if h, _, err := splitHostPortLoose(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, h := range hosts {
		if h.wildcard {
			if strings.HasSuffix(host, h.name) && len(host) > len(h.name) {
				return true
			}
		} else if host == h.name {
			return true
		}
	}
	return false
}

// splitHostPortLoose strips a port the way a Host header carries one.
func splitHostPortLoose(hostport string) (string, string, error) {
	u, err := url.Parse("http://" + hostport)
	if err != nil || u.Port() == "" && !strings.HasSuffix(hostport, ":") {
		return strings.Trim(hostport, "[]"), "", nil
	}
	return u.Hostname(), u.Port(), nil
}

func FuzzMatch(f *testing.F) {
	tab := mustCompile(f, fuzzRoutes()...)
	f.Add("/a/b", "", "GET", "", "")
	f.Add("/abc/d", "k=v+w&n=12", "POST", "t1", "api.example.com:80")
	f.Add("/q/x", "k=v%20w&n=7", "GET", "t9", "")
	f.Add("/a//b/c", "z=1", "GET", "", "x.wild.test")
	f.Fuzz(func(t *testing.T, path, rawQuery, method, tenant, host string) {
		r := &http.Request{
			Method: method,
			URL:    &url.URL{Path: path, RawQuery: rawQuery},
			Host:   host,
			Header: http.Header{},
		}
		if tenant != "" {
			r.Header["X-Tenant"] = strings.Split(tenant, "\n")
		}
		got, want := tab.match(r), referenceMatch(tab, r)
		if got != want {
			t.Fatalf("path=%q query=%q method=%q tenant=%q host=%q: indexed match %s, reference %s", path, rawQuery, method, tenant, host, name(got), name(want))
		}
	})
}

func name(e *entry) string {
	if e == nil {
		return "none"
	}
	return e.rule.name
}
