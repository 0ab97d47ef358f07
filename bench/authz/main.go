// Command authz measures inbound authorization (issue 5) in one run on one
// machine: the cost of one decision of proxy/authz at 1, 100 and 1,000 rules
// (Go benchmarks run in-process with testing.Benchmark), and the latency of
// HTTP/1.1 requests through the real inbound listener of proxy/sidecar with
// no policy and with 100 policies, next to the application reached directly.
// Setups are measured in rotating order over several rounds and reported as
// medians, percentiles and ratios in a Markdown file. It is started by
// `make bench-authz` and is not part of `make test`.
//
// It only uses 127.0.0.1.
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/authz"
	"github.com/weftmesh/weft/proxy/sidecar"
)

func main() {
	results := flag.String("results", "bench/authz/RESULTS.md", "Markdown file to write")
	n := flag.Int("n", 4000, "requests per setup per round")
	rounds := flag.Int("rounds", 3, "rounds")
	flag.Parse()
	if err := run(*results, *n, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench-authz:", err)
		os.Exit(1)
	}
}

func run(results string, n, rounds int) error {
	var md strings.Builder
	fmt.Fprintf(&md, "# Inbound authorization benchmark (issue 5)\n\n")
	fmt.Fprintf(&md, "Measured %s on %d CPUs, %s, with `make bench-authz` (`go run ./bench/authz`). "+
		"The machine is shared: absolute numbers drift between runs, ratios within one run are the result.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), runtime.Version())
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(&md, "Load average when the run started: %s (other engineers' builds and tests share the machine).\n\n", strings.Join(strings.Fields(string(la))[:3], " "))
	}

	fmt.Fprintf(&md, "## Decision cost\n\n")
	fmt.Fprintf(&md, "`authz.Engine.Decide` on policies of 10 rules each, half Deny and half Allow, every rule with an identity, a namespace, two methods and two paths; "+
		"the request matches only the last Allow policy, so every rule is evaluated.\n\n")
	fmt.Fprintf(&md, "| Rules | HTTP request ns/op | allocs/op | opaque TCP ns/op | allocs/op |\n|---:|---:|---:|---:|---:|\n")
	for _, rules := range []int{1, 100, 1000} {
		e, err := authz.Compile(manyRules(rules), "cluster.local")
		if err != nil {
			return err
		}
		h := bench(e, authz.Request{Port: 8080, Peer: "spiffe://cluster.local/ns/shop/sa/frontend", HTTP: true, Method: "GET", Path: "/api/orders/42"})
		t := bench(e, authz.Request{Port: 8080, Peer: "spiffe://cluster.local/ns/shop/sa/frontend"})
		fmt.Fprintf(&md, "| %d | %d | %d | %d | %d |\n", e.Rules(), h.NsPerOp(), h.AllocsPerOp(), t.NsPerOp(), t.AllocsPerOp())
	}

	lat, err := latency(n, rounds)
	if err != nil {
		return err
	}
	fmt.Fprintf(&md, "\n## Request latency through the inbound listener\n\n")
	fmt.Fprintf(&md, "One keep-alive HTTP/1.1 client sends `GET /api/bench` one request at a time (%d per setup per round, %d rounds, setups in rotating order); "+
		"plaintext inbound (the caller is unauthenticated), the application is Go's net/http answering 2 bytes. "+
		"\"100 policies\": 50 Deny and 50 Allow policies that do not match, then the Allow that does (evaluated last). "+
		"Medians over rounds of each round's percentile, in µs.\n\n", n, rounds)
	fmt.Fprintf(&md, "| Setup | p50 | p90 | p99 | p50 added vs direct |\n|---|---:|---:|---:|---:|\n")
	d := lat["direct"]
	for _, name := range []string{"direct", "inbound, no policy", "inbound, 100 policies"} {
		l := lat[name]
		fmt.Fprintf(&md, "| %s | %.1f | %.1f | %.1f | %.1f |\n", name, l[0], l[1], l[2], l[0]-d[0])
	}
	none, many := lat["inbound, no policy"], lat["inbound, 100 policies"]
	fmt.Fprintf(&md, "\nRatio 100 policies / no policy: p50 %.3f, p90 %.3f, p99 %.3f.\n", many[0]/none[0], many[1]/none[1], many[2]/none[2])
	fmt.Fprintf(&md, "\nNot measured here: mTLS between proxies (the decision does not depend on it), HTTP/2, and a peer proxy doing the same job "+
		"(haproxy/nginx have no SPIFFE-identity authorization to compare with).\n")
	if err := os.WriteFile(results, []byte(md.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(md.String())
	return nil
}

func bench(e *authz.Engine, r authz.Request) testing.BenchmarkResult {
	return testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e.Decide(&r)
		}
	})
}

// manyRules builds about n rules (at least one policy) that the benchmark
// request does not match, then one Allow policy that it does.
func manyRules(n int) *meshconfig.Inbound {
	in := &meshconfig.Inbound{DefaultPolicy: meshconfig.DefaultDeny}
	for i := 0; len(in.Policies)*10 < n-1; i++ {
		p := meshconfig.AuthorizationPolicy{Source: fmt.Sprintf("bench/p%d", i), Action: meshconfig.ActionDeny}
		if i%2 == 1 {
			p.Action = meshconfig.ActionAllow
		}
		for j := 0; j < 10 && len(in.Policies)*10+j < n-1; j++ {
			p.Rules = append(p.Rules, meshconfig.AuthorizationRule{
				From: []meshconfig.Source{{Identities: []string{fmt.Sprintf("spiffe://cluster.local/ns/n%d/sa/s%d", i, j)}, Namespaces: []string{fmt.Sprintf("n%d", i)}}},
				To: []meshconfig.Operation{{Methods: []string{"GET", "POST"}, Paths: []meshconfig.PathMatch{
					{Type: meshconfig.MatchPathPrefix, Value: fmt.Sprintf("/p%d/%d", i, j)}, {Type: meshconfig.MatchExact, Value: "/x"}}}},
			})
		}
		in.Policies = append(in.Policies, p)
	}
	in.Policies = append(in.Policies, meshconfig.AuthorizationPolicy{Source: "bench/allow", Action: meshconfig.ActionAllow,
		Rules: []meshconfig.AuthorizationRule{{From: []meshconfig.Source{{Namespaces: []string{"shop"}}, {Unauthenticated: true}},
			To: []meshconfig.Operation{{Methods: []string{"GET"}, Paths: []meshconfig.PathMatch{{Type: meshconfig.MatchPathPrefix, Value: "/api"}}}}}}})
	return in
}

// hundredPolicies is 100 non-matching policies and the matching Allow.
func hundredPolicies() []meshconfig.AuthorizationPolicy {
	var ps []meshconfig.AuthorizationPolicy
	for i := range 100 {
		p := meshconfig.AuthorizationPolicy{Source: fmt.Sprintf("bench/p%d", i), Action: meshconfig.ActionDeny,
			Rules: []meshconfig.AuthorizationRule{{
				From: []meshconfig.Source{{Identities: []string{fmt.Sprintf("spiffe://cluster.local/ns/n%d/sa/s", i)}}},
				To:   []meshconfig.Operation{{Paths: []meshconfig.PathMatch{{Type: meshconfig.MatchPathPrefix, Value: fmt.Sprintf("/p%d", i)}}}},
			}}}
		if i%2 == 1 {
			p.Action = meshconfig.ActionAllow
		}
		ps = append(ps, p)
	}
	return append(ps, meshconfig.AuthorizationPolicy{Source: "bench/allow", Action: meshconfig.ActionAllow,
		Rules: []meshconfig.AuthorizationRule{{From: []meshconfig.Source{{Unauthenticated: true}},
			To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{{Type: meshconfig.MatchPathPrefix, Value: "/api"}}}}}}})
}

func latency(n, rounds int) (map[string][3]float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go app.Serve(ln)
	defer app.Close()
	appAddr := ln.Addr().String()
	port := netip.MustParseAddrPort(appAddr).Port()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(ps []meshconfig.AuthorizationPolicy) (*sidecar.Proxy, error) {
		p, err := sidecar.New(sidecar.Config{InboundAddr: "127.0.0.1:0", InboundTarget: appAddr, Log: quiet, Registry: prometheus.NewRegistry()})
		if err != nil {
			return nil, err
		}
		snap := &meshconfig.Snapshot{Version: "bench", TrustDomain: "cluster.local", MTLSMode: meshconfig.MTLSPermissive,
			Inbound: meshconfig.Inbound{Ports: []meshconfig.InboundPort{{Port: port, Name: "http"}}, DefaultPolicy: meshconfig.DefaultAllow, Policies: ps}}
		if err := p.Apply(snap); err != nil {
			return nil, err
		}
		return p, p.Start()
	}
	none, err := start(nil)
	if err != nil {
		return nil, err
	}
	many, err := start(hundredPolicies())
	if err != nil {
		return nil, err
	}
	setups := []struct{ name, addr string }{
		{"direct", appAddr},
		{"inbound, no policy", none.Addr("inbound")},
		{"inbound, 100 policies", many.Addr("inbound")},
	}
	per := map[string][][3]float64{}
	for round := range rounds {
		for i := range setups {
			s := setups[(i+round)%len(setups)]
			p, err := measure(s.addr, n)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			per[s.name] = append(per[s.name], p)
		}
	}
	out := map[string][3]float64{}
	for name, rs := range per {
		var m [3]float64
		for k := range 3 {
			var xs []float64
			for _, r := range rs {
				xs = append(xs, r[k])
			}
			slices.Sort(xs)
			m[k] = xs[len(xs)/2]
		}
		out[name] = m
	}
	return out, nil
}

// measure returns p50, p90, p99 in µs of n sequential requests.
func measure(addr string, n int) ([3]float64, error) {
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer c.CloseIdleConnections()
	get := func() error {
		res, err := c.Get("http://" + addr + "/api/bench")
		if err != nil {
			return err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			return fmt.Errorf("status %d", res.StatusCode)
		}
		return nil
	}
	for range 200 { // warm up
		if err := get(); err != nil {
			return [3]float64{}, err
		}
	}
	ds := make([]float64, 0, n)
	for range n {
		t0 := time.Now()
		if err := get(); err != nil {
			return [3]float64{}, err
		}
		ds = append(ds, float64(time.Since(t0).Nanoseconds())/1e3)
	}
	slices.Sort(ds)
	q := func(p float64) float64 { return ds[int(p*float64(len(ds)-1))] }
	return [3]float64{q(0.5), q(0.9), q(0.99)}, nil
}
