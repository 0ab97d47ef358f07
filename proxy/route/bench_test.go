package route

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/route/balance"
)

// manyRoutes builds n HTTPRoutes attached to one port, in the shapes a real
// mesh has: per-team prefixes with a tenant header, exact health paths,
// method-restricted prefixes, query-param canaries and a few regexes
// (1 in 100). Each route has its own backend with 3 endpoints.
func manyRoutes(n int) meshconfig.ServicePort {
	p := meshconfig.ServicePort{Port: 8080, DefaultBackends: []meshconfig.Backend{endpoints("default", 100)}}
	for i := range n {
		var m meshconfig.RouteMatch
		switch {
		case i%100 == 99:
			m.Path = regex(fmt.Sprintf("/svc%d/items/[0-9]+", i))
		case i%4 == 0:
			m.Path = exact(fmt.Sprintf("/svc%d/healthz", i))
		case i%4 == 1:
			m.Path = prefix(fmt.Sprintf("/svc%d/api", i))
			m.Headers = []meshconfig.ValueMatch{hdr("x-tenant", fmt.Sprintf("t%d", i))}
		case i%4 == 2:
			m.Path = prefix(fmt.Sprintf("/svc%d", i))
			m.Method = http.MethodGet
		default:
			m.Path = prefix(fmt.Sprintf("/svc%d/canary", i))
			m.QueryParams = []meshconfig.ValueMatch{hdr("canary", "true")}
		}
		p.Routes = append(p.Routes, meshconfig.Route{
			Source: fmt.Sprintf("HTTPRoute ns%d/route%d", i%7, i),
			Rules:  []meshconfig.RouteRule{{Name: fmt.Sprintf("r%d", i), Matches: []meshconfig.RouteMatch{m}, Backends: []meshconfig.Backend{endpoints(fmt.Sprintf("b%d", i), 3)}}},
		})
	}
	return p
}

func endpoints(name string, n int) meshconfig.Backend {
	b := meshconfig.Backend{Name: name, Namespace: "default", Weight: 1}
	for i := range n {
		b.Endpoints = append(b.Endpoints, meshconfig.Endpoint{Address: fmt.Sprintf("10.%d.%d.%d:8080", len(name)%250, i/250, i%250)})
	}
	return b
}

// decisionCases are requests against manyRoutes(1000), with the rule each
// must reach.
var decisionCases = []struct {
	name, method, target string
	header               http.Header
	want                 string
}{
	{"exact", "GET", "/svc500/healthz", nil, "r500"},
	{"prefix+header", "GET", "/svc501/api/v1/orders/42", http.Header{"X-Tenant": {"t501"}}, "r501"},
	{"prefix+method", "GET", "/svc502/anything/deep/below", nil, "r502"},
	{"prefix+query", "GET", "/svc503/canary/x?a=b&canary=true", nil, "r503"},
	{"regex", "GET", "/svc599/items/123", nil, "r599"},
	{"no match", "GET", "/nowhere/at/all", nil, "default"},
}

func decisionRequest(method, target string, h http.Header) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	for k, v := range h {
		r.Header[k] = v
	}
	return r
}

// decide is the whole routing decision: rule, weighted backend, endpoint.
func decide(tab *Table, r *http.Request) (*rule, balance.Lease) {
	ru := tab.def
	if e := tab.match(r); e != nil {
		ru = e.rule
	}
	return ru, balance.Pick(ru.pickBackend().eps)
}

func TestRoutingDecisionAt1000Routes(t *testing.T) {
	tab, err := Compile(manyRoutes(1000), Options{Transport: noTransport})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range decisionCases {
		t.Run(c.name, func(t *testing.T) {
			r := decisionRequest(c.method, c.target, c.header)
			if got := matched(tab, r); got != c.want {
				t.Fatalf("matched %q, want %q", got, c.want)
			}
			// Allocation counts are deterministic, unlike timings.
			if n := testing.AllocsPerRun(200, func() {
				_, l := decide(tab, r)
				l.Done(time.Millisecond, false)
			}); n != 0 {
				t.Fatalf("routing decision allocates %v times", n)
			}
		})
	}
}

func BenchmarkRouteMatch1000(b *testing.B) {
	tab, err := Compile(manyRoutes(1000), Options{Transport: noTransport})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range decisionCases {
		b.Run(c.name, func(b *testing.B) {
			r := decisionRequest(c.method, c.target, c.header)
			b.ReportAllocs()
			for b.Loop() {
				tab.match(r)
			}
		})
	}
}

// BenchmarkBackendPick100 is the weighted backend draw plus the power of two
// choices among 100 endpoints, with the lease returned.
func BenchmarkBackendPick100(b *testing.B) {
	tab, err := Compile(meshconfig.ServicePort{Port: 80, DefaultBackends: []meshconfig.Backend{endpoints("a", 100), endpoints("bb", 100)}}, Options{Transport: noTransport})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		balance.Pick(tab.def.pickBackend().eps).Done(time.Millisecond, false)
	}
}

// BenchmarkRoutingDecision1000 is match + backend + endpoint at 1000 routes.
func BenchmarkRoutingDecision1000(b *testing.B) {
	tab, err := Compile(manyRoutes(1000), Options{Transport: noTransport})
	if err != nil {
		b.Fatal(err)
	}
	c := decisionCases[1]
	r := decisionRequest(c.method, c.target, c.header)
	b.ReportAllocs()
	for b.Loop() {
		_, l := decide(tab, r)
		l.Done(time.Millisecond, false)
	}
}

// BenchmarkLinearScan1000 is the spec read literally (every match in
// precedence order, see referenceMatch): the baseline the index is measured
// against, in the same run.
func BenchmarkLinearScan1000(b *testing.B) {
	tab, err := Compile(manyRoutes(1000), Options{Transport: noTransport})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range decisionCases {
		b.Run(c.name, func(b *testing.B) {
			r := decisionRequest(c.method, c.target, c.header)
			b.ReportAllocs()
			for b.Loop() {
				referenceMatch(tab, r)
			}
		})
	}
}

// staticRT answers every request from memory, so that BenchmarkServeHTTP
// measures the table's own per-request work (not the network).
type staticRT struct{}

func (staticRT) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Length": {"2"}}, ContentLength: 2, Body: http.NoBody, Request: r}, nil
}

// BenchmarkServeHTTP1000 is a whole request through ServeHTTP at 1000 routes:
// routing decision plus building the upstream request and relaying the answer.
func BenchmarkServeHTTP1000(b *testing.B) {
	tab, err := Compile(manyRoutes(1000), Options{Transport: func(meshconfig.Endpoint) http.RoundTripper { return staticRT{} }})
	if err != nil {
		b.Fatal(err)
	}
	c := decisionCases[1]
	r := decisionRequest(c.method, c.target, c.header)
	b.ReportAllocs()
	for b.Loop() {
		tab.ServeHTTP(discardWriter{}, r)
	}
}

type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (discardWriter) WriteHeader(int)             {}
