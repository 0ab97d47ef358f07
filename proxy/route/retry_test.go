package route

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/route/balance"
)

// refusedAddr is a loopback address where nothing listens: dialing it gets a
// real ECONNREFUSED from the kernel.
func refusedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestRetries(t *testing.T) {
	status := func(code int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) }
	}
	ok := func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }
	reset := func(w http.ResponseWriter, r *http.Request) {
		// The request arrived; the connection dies before any answer.
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	}
	peerNotSent := func(w http.ResponseWriter, r *http.Request) {
		// A peer proxy whose application refused the connection.
		w.Header().Set(HeaderNotSent, "1")
		w.WriteHeader(http.StatusBadGateway)
	}
	retry503 := &meshconfig.Retry{Codes: []int{503}, Attempts: 2, Backoff: meshconfig.Duration(time.Millisecond)}
	connOnly := &meshconfig.Retry{Attempts: 2, Backoff: meshconfig.Duration(time.Millisecond)}
	tests := []struct {
		name         string
		method, body string
		retry        *meshconfig.Retry
		first, later http.HandlerFunc
		refuseFirst  bool  // the first dial goes to a port where nothing listens
		refuseAll    int64 // so do the first refuseAll dials
		replayBuffer int
		wantStatus   int
		wantHits     int64
	}{
		{name: "GET retried on a retry code", method: "GET", retry: retry503, first: status(503), later: ok, wantStatus: 200, wantHits: 2},
		{name: "GET not retried on another code", method: "GET", retry: retry503, first: status(500), later: ok, wantStatus: 500, wantHits: 1},
		{name: "no retry policy, no retry", method: "GET", first: status(503), later: ok, wantStatus: 503, wantHits: 1},
		{name: "attempts exhausted", method: "GET", retry: retry503, first: status(503), later: status(503), wantStatus: 503, wantHits: 3},
		{name: "PUT with a body retried on a retry code", method: "PUT", body: "data", retry: retry503, first: status(503), later: ok, wantStatus: 200, wantHits: 2},
		{name: "POST never retried on a status", method: "POST", body: "data", retry: retry503, first: status(503), later: ok, wantStatus: 503, wantHits: 1},
		{name: "GET retried after the connection broke", method: "GET", retry: connOnly, first: reset, later: ok, wantStatus: 200, wantHits: 2},
		{name: "POST not retried after it reached the backend", method: "POST", body: "data", retry: connOnly, first: reset, later: ok, wantStatus: 502, wantHits: 1},
		{name: "POST retried when the connection was refused", method: "POST", body: "data", retry: connOnly, later: ok, refuseFirst: true, wantStatus: 200, wantHits: 1},
		{name: "POST over the replay buffer not retried", method: "POST", body: strings.Repeat("x", 100), replayBuffer: 16, retry: connOnly, later: ok, refuseFirst: true, wantStatus: 502, wantHits: 0},
		{name: "refused without retry policy: retried, it never left", method: "GET", later: ok, refuseFirst: true, wantStatus: 200, wantHits: 1},
		{name: "POST refused without retry policy: retried, it never left", method: "POST", later: ok, refuseAll: 1, wantStatus: 200, wantHits: 1},
		{name: "refused three times without retry policy: 502", method: "GET", later: ok, refuseAll: 3, wantStatus: 502, wantHits: 0},
		{name: "POST with a body, no retry policy: not kept, not retried", method: "POST", body: "data", later: ok, refuseFirst: true, wantStatus: 502, wantHits: 0},
		{name: "peer could not reach its app: retried without a retry policy", method: "GET", first: peerNotSent, later: ok, wantStatus: 200, wantHits: 2},
		{name: "peer could not reach its app: POST retried too", method: "POST", body: "data", retry: connOnly, first: peerNotSent, later: ok, wantStatus: 200, wantHits: 2},
		{name: "peer never reaches its app: 502 after the retries", method: "GET", first: peerNotSent, later: peerNotSent, wantStatus: 502, wantHits: 3},
		{name: "broken after it arrived, no retry policy: not retried", method: "GET", first: reset, later: ok, wantStatus: 502, wantHits: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUpstream(t, "u")
			u.set(func(w http.ResponseWriter, r *http.Request) {
				if u.hits.Load() == 1 && tt.first != nil {
					tt.first(w, r)
					return
				}
				tt.later(w, r)
			})
			refused := refusedAddr(t)
			var dials atomic.Int64
			// Fresh connections only: http.Transport itself retries some
			// requests on reused connections, which would blur the count.
			tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				n := dials.Add(1)
				if (tt.refuseFirst && n == 1) || n <= tt.refuseAll {
					addr = refused
				}
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}
			var attempts atomic.Int64
			p := newMeshProxy(t, port(meshconfig.RouteRule{Retry: tt.retry, Backends: []meshconfig.Backend{backendOf("u", 1, u)}}), Options{
				Transport:    func(meshconfig.Endpoint) http.RoundTripper { return tr },
				ReplayBuffer: tt.replayBuffer,
				Observe:      func(r Result) { attempts.Store(int64(r.Attempts)) },
			})
			got := p.do(tt.method, "/", tt.body, nil)
			if got.err != nil {
				t.Fatal(got.err)
			}
			if got.status != tt.wantStatus || u.hits.Load() != tt.wantHits {
				t.Fatalf("status %d after %d backend hits (%d attempts), want %d after %d", got.status, u.hits.Load(), attempts.Load(), tt.wantStatus, tt.wantHits)
			}
			if got.header.Get(HeaderNotSent) != "" {
				t.Errorf("%s reached the client", HeaderNotSent)
			}
			if tt.body != "" && tt.wantHits > 0 && got.status == 200 {
				if b := load(&u.lastBody); b != tt.body {
					t.Fatalf("backend received body %q, want %q", b, tt.body)
				}
			}
		})
	}
}

// TestRetryBudget: a backend that always fails with a retryable code sees at
// most 20% more requests than clients sent, plus the burst.
func TestRetryBudget(t *testing.T) {
	u := newUpstream(t, "down")
	u.set(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
	p := newMeshProxy(t, port(meshconfig.RouteRule{
		Retry:    &meshconfig.Retry{Codes: []int{503}, Attempts: 3, Backoff: meshconfig.Duration(time.Microsecond)},
		Backends: []meshconfig.Backend{backendOf("down", 1, u)},
	}), Options{RetryBudget: NewRetryBudget(0.2, 10)})
	const n = 500
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range n / 4 {
				if got := p.get("/"); got.status != 503 {
					t.Errorf("status %d, want 503", got.status)
				}
			}
		})
	}
	wg.Wait()
	// Without a budget: 4 tries per request = 2000 hits.
	hits := u.hits.Load()
	if hits > n+n/5+10 || hits <= n {
		t.Fatalf("backend saw %d requests for %d client requests; want more than %d (retries happen) and at most %d", hits, n, n, n+n/5+10)
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestFailureAccrual: an endpoint that starts failing is ejected (no more
// traffic), and once its ejection has passed and it works again, a probe
// brings it back into service.
func TestFailureAccrual(t *testing.T) {
	good, flaky := newUpstream(t, "good"), newUpstream(t, "flaky")
	// The good endpoint is the slower one, so that the latency-aware picker
	// prefers the flaky one while it answers fast: that makes the ejection
	// (and the recovery) visible, instead of the flaky endpoint simply
	// being avoided. Nothing asserts a duration.
	good.set(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(3 * time.Millisecond)
		_, _ = w.Write([]byte("good"))
	})
	var broken atomic.Bool
	flaky.set(func(w http.ResponseWriter, r *http.Request) {
		if broken.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("flaky"))
	})
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	store := balance.NewStore(balance.Config{ConsecutiveFailures: 3, BaseEjection: time.Minute, Now: clk.Now})
	p := newMeshProxy(t, port(meshconfig.RouteRule{Backends: []meshconfig.Backend{backendOf("svc", 1, good, flaky)}}), Options{Store: store})
	send := func(n int) (errors int) {
		for range n {
			if got := p.get("/"); got.status != 200 {
				errors++
			}
		}
		return errors
	}
	if send(100); flaky.hits.Load() == 0 {
		t.Fatal("healthy endpoint got no traffic")
	}
	broken.Store(true)
	ep := store.Endpoint(flaky.addr())
	for i := 0; !ep.Ejected(); i++ {
		if i == 1000 {
			t.Fatal("failing endpoint never ejected")
		}
		send(1)
	}
	hits := flaky.hits.Load()
	if errs := send(200); errs != 0 || flaky.hits.Load() != hits {
		t.Fatalf("after ejection: %d errors, %d requests to the ejected endpoint; want none", errs, flaky.hits.Load()-hits)
	}
	// Still broken when the ejection ends: the probe fails and the backoff grows.
	clk.Advance(time.Minute)
	for flaky.hits.Load() == hits {
		send(1)
	}
	if !ep.Ejected() || ep.Ejections() != 2 {
		t.Fatalf("after a failed probe: ejected=%v ejections=%d, want ejected again (2nd time)", ep.Ejected(), ep.Ejections())
	}
	clk.Advance(time.Minute)
	if !ep.Ejected() {
		t.Fatal("second ejection no longer than the first")
	}
	// Repaired: after the (doubled) ejection the probe succeeds and traffic returns.
	broken.Store(false)
	clk.Advance(time.Minute)
	hits = flaky.hits.Load()
	if errs := send(200); errs != 0 || flaky.hits.Load()-hits < 10 {
		t.Fatalf("after repair: %d errors, %d requests to the repaired endpoint", errs, flaky.hits.Load()-hits)
	}
	if ep.Ejected() {
		t.Fatal("repaired endpoint still ejected")
	}
}

// TestStateSurvivesSwap: recompiling with new weights keeps what the store
// learnt about an endpoint (here, that it is ejected).
func TestStateSurvivesSwap(t *testing.T) {
	a, b := newUpstream(t, "a"), newUpstream(t, "b")
	a.set(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(502) })
	// b is slower so that the picker tries the fast-failing a (see TestFailureAccrual).
	b.set(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(3 * time.Millisecond)
		_, _ = w.Write([]byte("b"))
	})
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	store := balance.NewStore(balance.Config{ConsecutiveFailures: 2, Now: clk.Now})
	split := func(wa, wb uint32) meshconfig.ServicePort {
		return port(meshconfig.RouteRule{Backends: []meshconfig.Backend{{Name: "svc", Namespace: "default", Weight: wa, Endpoints: []meshconfig.Endpoint{{Address: a.addr()}, {Address: b.addr()}}}, backendOf("other", wb, b)}})
	}
	p := newMeshProxy(t, split(1, 0), Options{Store: store})
	for i := 0; !store.Endpoint(a.addr()).Ejected(); i++ {
		if i == 1000 {
			t.Fatal("never ejected")
		}
		p.get("/")
	}
	p.swap(t, split(9, 1))
	hits := a.hits.Load()
	for range 100 {
		if got := p.get("/"); got.status != 200 {
			t.Fatalf("status %d: ejection forgotten after a weight change", got.status)
		}
	}
	if a.hits.Load() != hits {
		t.Fatal("ejected endpoint got traffic after the weight change")
	}
}

func TestNotSent(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"dial refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"wrapped dial", fmt.Errorf("proxy: %w", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}), true},
		{"transport says so", fmt.Errorf("mtls handshake: %w", ErrNotSent), true},
		{"read after sending", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, false},
		{"other", errors.New("EOF"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := notSent(tt.err); got != tt.want {
				t.Fatalf("notSent=%v, want %v", got, tt.want)
			}
		})
	}
}

func TestRetryPolicyDefaultsAndBackoff(t *testing.T) {
	p := compileRetry(&meshconfig.Retry{Codes: []int{503, 504}}, 25*time.Millisecond)
	if p.attempts != 1 || p.backoff != 25*time.Millisecond {
		t.Fatalf("defaults: attempts %d backoff %v, want 1 and 25ms", p.attempts, p.backoff)
	}
	if !p.retriesStatus(503) || !p.retriesStatus(504) || p.retriesStatus(500) || p.retriesStatus(700) {
		t.Fatal("status code set wrong")
	}
	// Exponential, capped at 10× the base, jittered within [d/2, d].
	for n, d := range []time.Duration{25, 50, 100, 200, 250, 250} {
		d *= time.Millisecond
		for range 100 {
			if got := p.delay(n + 1); got < d/2 || got > d {
				t.Fatalf("delay(%d)=%v, want within [%v, %v]", n+1, got, d/2, d)
			}
		}
	}
	if compileRetry(nil, time.Second) != nil {
		t.Fatal("no Retry must mean no retry policy")
	}
}
