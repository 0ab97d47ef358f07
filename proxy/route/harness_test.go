package route

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/route/balance"
)

// upstream is a real HTTP server on 127.0.0.1 playing a backend pod.
type upstream struct {
	name    string
	srv     *httptest.Server
	hits    atomic.Int64
	handler atomic.Pointer[http.HandlerFunc]
	// last request seen, for filter assertions
	lastPath, lastHost, lastBody atomic.Pointer[string]
	lastHeader                   atomic.Pointer[http.Header]
}

func newUpstream(t *testing.T, name string) *upstream {
	t.Helper()
	u := &upstream{name: name}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		p, h, b, hd := r.URL.RequestURI(), r.Host, string(body), r.Header.Clone()
		u.lastPath.Store(&p)
		u.lastHost.Store(&h)
		u.lastBody.Store(&b)
		u.lastHeader.Store(&hd)
		if f := u.handler.Load(); f != nil {
			(*f)(w, r)
			return
		}
		w.Header().Set("X-Backend", name)
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) set(f http.HandlerFunc) { u.handler.Store(&f) }

func (u *upstream) addr() string { return u.srv.Listener.Addr().String() }

func load(p *atomic.Pointer[string]) string {
	if s := p.Load(); s != nil {
		return *s
	}
	return ""
}

// backendOf is a meshconfig.Backend served by the given upstreams.
func backendOf(name string, weight uint32, us ...*upstream) meshconfig.Backend {
	b := meshconfig.Backend{Name: name, Namespace: "default", Weight: weight}
	for _, u := range us {
		b.Endpoints = append(b.Endpoints, meshconfig.Endpoint{Address: u.addr()})
	}
	return b
}

// meshProxy plays the proxy core: it holds the current table in an
// atomic.Pointer and serves every request through it, as weft-proxy will.
type meshProxy struct {
	tab       atomic.Pointer[Table]
	srv       *httptest.Server
	client    *http.Client
	opts      Options
	transport *http.Transport
}

func newMeshProxy(t *testing.T, port meshconfig.ServicePort, opts Options) *meshProxy {
	t.Helper()
	p := &meshProxy{transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	if opts.Transport == nil {
		opts.Transport = func(meshconfig.Endpoint) http.RoundTripper { return p.transport }
	}
	if opts.Store == nil {
		opts.Store = balance.NewStore(balance.Config{})
	}
	p.opts = opts
	p.swap(t, port)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.tab.Load().ServeHTTP(w, r)
	}))
	p.client = &http.Client{
		Transport:     &http.Transport{MaxIdleConnsPerHost: 64},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(func() {
		p.srv.Close()
		p.transport.CloseIdleConnections()
		p.client.CloseIdleConnections()
	})
	return p
}

func (p *meshProxy) swap(t testing.TB, port meshconfig.ServicePort) {
	t.Helper()
	if port.Port == 0 {
		port.Port = 8080
	}
	tab, err := Compile(port, p.opts)
	if err != nil {
		t.Fatal(err)
	}
	p.tab.Store(tab)
}

type answer struct {
	status int
	body   string
	header http.Header
	err    error
}

func (p *meshProxy) do(method, target, body string, hdr http.Header) answer {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r, err := http.NewRequest(method, p.srv.URL+target, rd)
	if err != nil {
		return answer{err: err}
	}
	for k, vs := range hdr {
		r.Header[k] = vs
	}
	resp, err := p.client.Do(r)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: string(b), header: resp.Header, err: err}
}

func (p *meshProxy) get(target string) answer { return p.do(http.MethodGet, target, "", nil) }

// port is a service port with one route rule and no default backends.
func port(rr meshconfig.RouteRule) meshconfig.ServicePort {
	return meshconfig.ServicePort{Port: 8080, Routes: []meshconfig.Route{{Source: "HTTPRoute default/test", Rules: []meshconfig.RouteRule{rr}}}}
}
