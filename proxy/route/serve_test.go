package route

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/route/balance"
)

func TestWeightedSplit(t *testing.T) {
	a, b := newUpstream(t, "a"), newUpstream(t, "b")
	p := newMeshProxy(t, port(meshconfig.RouteRule{Backends: []meshconfig.Backend{backendOf("a", 70, a), backendOf("b", 30, b)}}), Options{})
	const n = 1000
	for range n {
		if got := p.get("/"); got.err != nil || got.status != 200 {
			t.Fatalf("request failed: %+v", got)
		}
	}
	// ±5% of 1000 is ±50 requests: 3.4 standard deviations of a 70/30 draw.
	if ha := a.hits.Load(); ha < 650 || ha > 750 || ha+b.hits.Load() != n {
		t.Fatalf("split a=%d b=%d, want a in [650,750] of %d", ha, b.hits.Load(), n)
	}
}

func TestNoBackendAnswers(t *testing.T) {
	live := newUpstream(t, "live")
	tests := []struct {
		name     string
		backends []meshconfig.Backend
		want     int
		outcome  Outcome
	}{
		{"no backends: 500", nil, 500, OutcomeNoBackend},
		{"all weights 0: 500", []meshconfig.Backend{backendOf("live", 0, live), backendOf("other", 0, live)}, 500, OutcomeNoBackend},
		{"backend without endpoints: 503", []meshconfig.Backend{backendOf("empty", 1)}, 503, OutcomeUnavailable},
		{"weight 0 receives nothing", []meshconfig.Backend{backendOf("empty", 0), backendOf("live", 1, live)}, 200, OutcomeResponse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var results []Result
			var mu sync.Mutex
			p := newMeshProxy(t, port(meshconfig.RouteRule{Name: "r", Backends: tt.backends}), Options{Observe: func(r Result) {
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}})
			for range 20 {
				if got := p.get("/"); got.status != tt.want {
					t.Fatalf("status %d, want %d", got.status, tt.want)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(results) != 20 || results[0].Outcome != tt.outcome || results[0].Route != "HTTPRoute default/test" || results[0].Status != tt.want {
				t.Fatalf("observed %d results, first %+v; want outcome %v", len(results), results[0], tt.outcome)
			}
		})
	}
}

func TestDefaultBackendsWhenNoRuleMatches(t *testing.T) {
	svc, api := newUpstream(t, "svc"), newUpstream(t, "api")
	p := newMeshProxy(t, meshconfig.ServicePort{
		Port:            8080,
		DefaultBackends: []meshconfig.Backend{backendOf("svc", 1, svc)},
		Routes: []meshconfig.Route{{Source: "HTTPRoute default/api", Rules: []meshconfig.RouteRule{{
			Matches:  []meshconfig.RouteMatch{{Path: prefix("/api")}},
			Backends: []meshconfig.Backend{backendOf("api", 1, api)},
		}}}},
	}, Options{})
	if got := p.get("/api/x"); got.body != "api" {
		t.Fatalf("/api/x went to %q", got.body)
	}
	if got := p.get("/apix"); got.body != "svc" {
		t.Fatalf("/apix went to %q", got.body)
	}
}

// TestWeightChangeUnderLoad swaps tables while requests are in flight; no
// request may fail, and once the last swap is in, traffic follows it.
func TestWeightChangeUnderLoad(t *testing.T) {
	a, b := newUpstream(t, "a"), newUpstream(t, "b")
	// Hold each request briefly so that swaps land while requests are in flight.
	hold := func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Millisecond)
		_, _ = w.Write([]byte("ok"))
	}
	a.set(hold)
	b.set(hold)
	split := func(wa, wb uint32) meshconfig.ServicePort {
		return port(meshconfig.RouteRule{Backends: []meshconfig.Backend{backendOf("a", wa, a), backendOf("b", wb, b)}})
	}
	p := newMeshProxy(t, split(50, 50), Options{})
	var failed atomic.Int64
	var firstErr atomic.Pointer[string]
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if got := p.get("/"); got.err != nil || got.status != 200 {
					failed.Add(1)
					s := got.body
					if got.err != nil {
						s = got.err.Error()
					}
					firstErr.CompareAndSwap(nil, &s)
				}
			}
		})
	}
	weights := [][2]uint32{{100, 0}, {0, 100}, {70, 30}, {0, 1}, {1, 0}, {30, 70}}
	for i := range 60 {
		w := weights[i%len(weights)]
		p.swap(t, split(w[0], w[1]))
		// Let some requests start under this table before the next swap.
		start := a.hits.Load() + b.hits.Load()
		for a.hits.Load()+b.hits.Load() < start+8 {
			time.Sleep(100 * time.Microsecond)
		}
	}
	p.swap(t, split(0, 1))
	stop()
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d requests failed during weight changes, first: %s", n, *firstErr.Load())
	}
	before := a.hits.Load()
	for range 50 {
		if got := p.get("/"); got.status != 200 {
			t.Fatalf("status %d after the last swap", got.status)
		}
	}
	if a.hits.Load() != before {
		t.Fatalf("backend with weight 0 got %d requests after the swap", a.hits.Load()-before)
	}
}

func TestFilters(t *testing.T) {
	backend, shadow := newUpstream(t, "backend"), newUpstream(t, "shadow")
	mirrored := make(chan string, 8)
	shadow.set(func(w http.ResponseWriter, r *http.Request) {
		mirrored <- load(&shadow.lastPath) + " " + load(&shadow.lastBody)
		// A failing mirror must not matter to the client.
		w.WriteHeader(http.StatusInternalServerError)
	})
	be := []meshconfig.Backend{backendOf("backend", 1, backend)}
	tests := []struct {
		name    string
		match   meshconfig.RouteMatch
		filters []meshconfig.Filter
		method  string
		target  string
		body    string
		reqHdr  http.Header
		check   func(t *testing.T, got answer)
	}{
		{
			name:  "request header modifier",
			match: meshconfig.RouteMatch{Path: prefix("/")},
			filters: []meshconfig.Filter{{Type: meshconfig.FilterRequestHeaderModifier, RequestHeaderModifier: &meshconfig.HeaderModifier{
				Set: []meshconfig.Header{{Name: "x-set", Value: "new"}}, Add: []meshconfig.Header{{Name: "x-add", Value: "2"}}, Remove: []string{"X-Remove"},
			}}},
			target: "/",
			reqHdr: http.Header{"X-Set": {"old"}, "X-Add": {"1"}, "X-Remove": {"gone"}},
			check: func(t *testing.T, got answer) {
				h := *backend.lastHeader.Load()
				if h.Get("X-Set") != "new" || strings.Join(h.Values("X-Add"), ",") != "1,2" || h.Get("X-Remove") != "" {
					t.Fatalf("backend saw %v", h)
				}
			},
		},
		{
			name:  "response header modifier",
			match: meshconfig.RouteMatch{Path: prefix("/")},
			filters: []meshconfig.Filter{{Type: meshconfig.FilterResponseHeaderModifier, ResponseHeaderModifier: &meshconfig.HeaderModifier{
				Set: []meshconfig.Header{{Name: "X-Backend", Value: "hidden"}}, Add: []meshconfig.Header{{Name: "X-Route", Value: "test"}},
			}}},
			target: "/",
			check: func(t *testing.T, got answer) {
				if got.header.Get("X-Backend") != "hidden" || got.header.Get("X-Route") != "test" {
					t.Fatalf("client saw %v", got.header)
				}
			},
		},
		{
			name:  "url rewrite of prefix and host",
			match: meshconfig.RouteMatch{Path: prefix("/old")},
			filters: []meshconfig.Filter{{Type: meshconfig.FilterURLRewrite, URLRewrite: &meshconfig.URLRewrite{
				Hostname: "rewritten.example", Path: &meshconfig.PathModifier{Type: meshconfig.ReplacePrefixMatch, Value: "/new"},
			}}},
			target: "/old/page?q=1",
			check: func(t *testing.T, got answer) {
				if p, h := load(&backend.lastPath), load(&backend.lastHost); p != "/new/page?q=1" || h != "rewritten.example" {
					t.Fatalf("backend saw path %q host %q", p, h)
				}
			},
		},
		{
			name:  "redirect",
			match: meshconfig.RouteMatch{Path: prefix("/moved")},
			filters: []meshconfig.Filter{{Type: meshconfig.FilterRequestRedirect, RequestRedirect: &meshconfig.Redirect{
				Scheme: "https", Hostname: "new.example", StatusCode: 301, Path: &meshconfig.PathModifier{Type: meshconfig.ReplaceFullPath, Value: "/here"},
			}}},
			target: "/moved/x?y=1",
			check: func(t *testing.T, got answer) {
				if got.status != 301 || got.header.Get("Location") != "https://new.example/here?y=1" {
					t.Fatalf("got %d Location %q", got.status, got.header.Get("Location"))
				}
			},
		},
		{
			name:  "mirror gets a copy, client gets the real answer",
			match: meshconfig.RouteMatch{Path: prefix("/")},
			filters: []meshconfig.Filter{{Type: meshconfig.FilterRequestMirror, RequestMirror: &meshconfig.Mirror{
				Backend: backendOf("shadow", 1, shadow),
			}}},
			method: http.MethodPost,
			target: "/mirror",
			body:   "payload",
			check: func(t *testing.T, got answer) {
				if got.status != 200 || got.body != "backend" {
					t.Fatalf("client got %d %q", got.status, got.body)
				}
				select {
				case m := <-mirrored:
					if m != "/mirror payload" {
						t.Fatalf("mirror saw %q", m)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("mirror never received the request")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newMeshProxy(t, port(meshconfig.RouteRule{Matches: []meshconfig.RouteMatch{tt.match}, Filters: tt.filters, Backends: be}), Options{})
			m := tt.method
			if m == "" {
				m = http.MethodGet
			}
			got := p.do(m, tt.target, tt.body, tt.reqHdr)
			if got.err != nil {
				t.Fatal(got.err)
			}
			tt.check(t, got)
		})
	}
}

// blockUntilCanceled answers only when the proxy gives up on the request.
func blockUntilCanceled(w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(30 * time.Second):
		w.WriteHeader(http.StatusTeapot)
	}
}

func TestTimeouts(t *testing.T) {
	tests := []struct {
		name     string
		timeouts meshconfig.Timeouts
		retry    *meshconfig.Retry
		// firstHangs: only the first attempt hangs, later ones answer.
		firstHangs bool
		want       int
		wantHits   int64
	}{
		{name: "request timeout", timeouts: meshconfig.Timeouts{Request: meshconfig.Duration(50 * time.Millisecond)}, want: 504, wantHits: 1},
		{name: "backend request timeout", timeouts: meshconfig.Timeouts{BackendRequest: meshconfig.Duration(50 * time.Millisecond)}, want: 504, wantHits: 1},
		{
			name:       "backend request timeout retried when 504 is a retry code",
			timeouts:   meshconfig.Timeouts{BackendRequest: meshconfig.Duration(50 * time.Millisecond)},
			retry:      &meshconfig.Retry{Codes: []int{504}, Attempts: 2, Backoff: meshconfig.Duration(time.Millisecond)},
			firstHangs: true, want: 200, wantHits: 2,
		},
		{
			name:     "request timeout bounds the retries",
			timeouts: meshconfig.Timeouts{Request: meshconfig.Duration(100 * time.Millisecond), BackendRequest: meshconfig.Duration(20 * time.Millisecond)},
			retry:    &meshconfig.Retry{Codes: []int{504}, Attempts: 1000, Backoff: meshconfig.Duration(time.Millisecond)},
			want:     504,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUpstream(t, "slow")
			u.set(func(w http.ResponseWriter, r *http.Request) {
				if !tt.firstHangs || u.hits.Load() == 1 {
					blockUntilCanceled(w, r)
					return
				}
				_, _ = w.Write([]byte("late but fine"))
			})
			p := newMeshProxy(t, port(meshconfig.RouteRule{Timeouts: &tt.timeouts, Retry: tt.retry, Backends: []meshconfig.Backend{backendOf("slow", 1, u)}}),
				Options{RetryBudget: NewRetryBudget(1, 1000)})
			got := p.get("/")
			if got.status != tt.want {
				t.Fatalf("status %d, want %d", got.status, tt.want)
			}
			if tt.wantHits != 0 && u.hits.Load() != tt.wantHits {
				t.Fatalf("backend hit %d times, want %d", u.hits.Load(), tt.wantHits)
			}
		})
	}
}

func TestConcurrencyLimit(t *testing.T) {
	u := newUpstream(t, "busy")
	release := make(chan struct{})
	u.set(func(w http.ResponseWriter, r *http.Request) { <-release })
	store := balance.NewStore(balance.Config{MaxRequests: 1})
	p := newMeshProxy(t, port(meshconfig.RouteRule{Backends: []meshconfig.Backend{backendOf("busy", 1, u)}}), Options{Store: store})
	first := make(chan answer, 1)
	go func() { first <- p.get("/") }()
	for u.hits.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	if got := p.get("/"); got.status != 503 {
		t.Fatalf("second request got %d with the endpoint at its limit, want 503", got.status)
	}
	close(release)
	if got := <-first; got.status != 200 {
		t.Fatalf("first request got %d", got.status)
	}
	if got := p.get("/"); got.status != 200 {
		t.Fatalf("request after release got %d", got.status)
	}
}

// TestStreamingAndTrailers: a response of unknown length reaches the client
// chunk by chunk (the backend waits for the client to see the first chunk
// before sending the rest), and trailers survive, as gRPC needs.
func TestStreamingAndTrailers(t *testing.T) {
	u := newUpstream(t, "stream")
	seen := make(chan struct{})
	u.set(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		_, _ = w.Write([]byte("first\n"))
		_ = http.NewResponseController(w).Flush()
		select {
		case <-seen:
		case <-time.After(10 * time.Second):
			return // the proxy buffered: the client never saw "first"
		}
		_, _ = w.Write([]byte("second\n"))
		w.Header().Set("Grpc-Status", "0")
	})
	p := newMeshProxy(t, port(meshconfig.RouteRule{Backends: []meshconfig.Backend{backendOf("stream", 1, u)}}), Options{})
	resp, err := p.client.Get(p.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 6)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first\n" {
		t.Fatalf("first chunk %q, %v", buf, err)
	}
	close(seen)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second\n" {
		t.Fatalf("rest %q, %v", rest, err)
	}
	if got := resp.Trailer.Get("Grpc-Status"); got != "0" {
		t.Fatalf("trailer Grpc-Status=%q, want 0", got)
	}
}

func TestAddressesForRetain(t *testing.T) {
	a, b, m := newUpstream(t, "a"), newUpstream(t, "b"), newUpstream(t, "m")
	store := balance.NewStore(balance.Config{})
	store.Endpoint("10.0.0.1:80") // an endpoint that left
	sp := port(meshconfig.RouteRule{
		Filters:  []meshconfig.Filter{{Type: meshconfig.FilterRequestMirror, RequestMirror: &meshconfig.Mirror{Backend: backendOf("m", 1, m)}}},
		Backends: []meshconfig.Backend{backendOf("a", 1, a)},
	})
	sp.DefaultBackends = []meshconfig.Backend{backendOf("b", 1, b)}
	tab, err := Compile(sp, Options{Transport: noTransport, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]bool{}
	tab.Addresses(func(addr string) { live[addr] = true })
	if removed := store.Retain(func(addr string) bool { return live[addr] }); removed != 1 || store.Len() != 3 {
		t.Fatalf("Retain removed %d, kept %d; want 1 removed, a, b and the mirror kept", removed, store.Len())
	}
}

// TestWeightChangeSparesInFlight: a request in flight to a backend whose
// weight drops to 0 still completes; new requests avoid that backend.
func TestWeightChangeSparesInFlight(t *testing.T) {
	a, b := newUpstream(t, "a"), newUpstream(t, "b")
	release := make(chan struct{})
	a.set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		_, _ = w.Write([]byte("a"))
	})
	split := func(wa, wb uint32) meshconfig.ServicePort {
		return port(meshconfig.RouteRule{Backends: []meshconfig.Backend{backendOf("a", wa, a), backendOf("b", wb, b)}})
	}
	p := newMeshProxy(t, split(1, 0), Options{})
	inFlight := make(chan answer, 1)
	go func() { inFlight <- p.get("/") }()
	for a.hits.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	p.swap(t, split(0, 1))
	for range 20 {
		if got := p.get("/"); got.body != "b" {
			t.Fatalf("new request answered %d %q, want b", got.status, got.body)
		}
	}
	close(release)
	if got := <-inFlight; got.status != 200 || got.body != "a" {
		t.Fatalf("in-flight request got %d %q, want 200 a", got.status, got.body)
	}
}

type callerKey struct{}

// TestMirrorDetached: a mirrored copy runs after the client's request may
// have ended, so it must carry none of that request's context values: the
// proxy core keeps per-request records there (which endpoint answered, over
// TLS or not) that a background copy would overwrite while the core reads
// them.
func TestMirrorDetached(t *testing.T) {
	backend, shadow := newUpstream(t, "backend"), newUpstream(t, "shadow")
	var tr http.Transport
	t.Cleanup(tr.CloseIdleConnections)
	sawValue := make(chan bool, 1)
	opts := Options{Transport: func(ep meshconfig.Endpoint) http.RoundTripper {
		if ep.Address != shadow.addr() {
			return &tr
		}
		return rtFunc(func(r *http.Request) (*http.Response, error) {
			sawValue <- r.Context().Value(callerKey{}) != nil
			return tr.RoundTrip(r)
		})
	}}
	tab, err := Compile(port(meshconfig.RouteRule{
		Filters:  []meshconfig.Filter{{Type: meshconfig.FilterRequestMirror, RequestMirror: &meshconfig.Mirror{Backend: backendOf("shadow", 1, shadow)}}},
		Backends: []meshconfig.Backend{backendOf("backend", 1, backend)},
	}), opts)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequestWithContext(context.WithValue(context.Background(), callerKey{}, "caller's"), http.MethodGet, "/x", nil)
	w := httptest.NewRecorder()
	tab.ServeHTTP(w, r)
	if w.Code != http.StatusOK || w.Body.String() != "backend" {
		t.Fatalf("client got %d %q", w.Code, w.Body.String())
	}
	select {
	case saw := <-sawValue:
		if saw {
			t.Fatal("the mirrored request carries the client request's context values")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("mirror never sent")
	}
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestRelayStreamHeaders: the headers of a streamed response (unknown
// length) reach the client when the backend sends them, not with the first
// body bytes: a gRPC server stream or an event stream may send its headers
// long before any message.
func TestRelayStreamHeaders(t *testing.T) {
	b := newUpstream(t, "stream")
	release := make(chan struct{})
	b.set(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Early", "yes")
		w.WriteHeader(http.StatusAccepted)
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "late")
	})
	p := newMeshProxy(t, port(meshconfig.RouteRule{Backends: []meshconfig.Backend{backendOf("stream", 1, b)}}), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.srv.URL+"/s", nil)
	resp, err := p.client.Do(req) // returns once the headers are in
	if err != nil {
		close(release)
		t.Fatalf("headers did not arrive before the body: %v", err)
	}
	defer resp.Body.Close()
	close(release)
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("X-Early") != "yes" {
		t.Fatalf("got %d %v", resp.StatusCode, resp.Header)
	}
	if body, err := io.ReadAll(resp.Body); err != nil || string(body) != "late" {
		t.Fatalf("body %q %v", body, err)
	}
}
