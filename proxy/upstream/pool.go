// Package upstream owns the proxy's connections to where requests go: pooled
// HTTP/1.1 and h2c connections to plaintext endpoints and to the local
// application, and mTLS connections to other proxies (verifying the exact
// SPIFFE ID the snapshot expects for the endpoint). Request routing code
// (proxy/route) gets an http.RoundTripper per endpoint from here and never
// dials itself.
//
// It must not choose endpoints (balancing is the router's) nor read the
// snapshot.
package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/identity"
	"github.com/weftmesh/weft/proxy/internal/coalesce"
	"github.com/weftmesh/weft/proxy/internal/rawtcp"
	"github.com/weftmesh/weft/proxy/sockmark"
)

// Headers exchanged between two proxies. The inbound proxy removes them
// before the application sees the request, and removes any that arrive from
// a plaintext client, so they cannot be forged.
const (
	// HeaderOrigProto tells the inbound proxy that the application on the
	// client side spoke HTTP/2 (so the server's app is called with h2c).
	HeaderOrigProto = "Weft-Orig-Proto"
	// HeaderClientID carries the verified client SPIFFE ID to the app.
	HeaderClientID = "Weft-Client-Id"
)

// MeshProtocol is how HTTP travels between two proxies.
type MeshProtocol string

const (
	// MeshAuto, the default, carries each request between proxies in the
	// protocol the application spoke: HTTP/1.x requests over pooled
	// HTTP/1.1 mTLS connections, HTTP/2 (h2c, gRPC) multiplexed over one
	// HTTP/2 mTLS connection. HTTP/1.1 requests are served by the inline
	// client at both ends, with no HTTP/2 framing or stream goroutines in
	// between (the faster path for them, see bench/proxy/RESULTS.md), and
	// HTTP/2 keeps its streams, trailers and flow control end to end.
	MeshAuto MeshProtocol = "auto"
	// MeshH2 multiplexes all requests to one endpoint on one mTLS
	// connection: one handshake, no wait for a free connection, and fewer
	// sockets. Upgrades still go over HTTP/1.1.
	MeshH2 MeshProtocol = "h2"
	// MeshH1 uses one mTLS connection per concurrent request (HTTP/1.1),
	// whatever the application spoke. From an HTTP/2 client the trailers
	// of a short response can be lost on this hop.
	MeshH1 MeshProtocol = "h1"
)

// ParseMeshProtocol checks a -mesh-protocol value; "" is MeshAuto.
func ParseMeshProtocol(s string) (MeshProtocol, error) {
	switch m := MeshProtocol(s); m {
	case "":
		return MeshAuto, nil
	case MeshAuto, MeshH2, MeshH1:
		return m, nil
	}
	return "", fmt.Errorf("mesh protocol %q: want auto, h2 or h1", s)
}

// Pool holds upstream connections. Create it with New.
type Pool struct {
	ids   *identity.Source // nil: plaintext only
	proto MeshProtocol
	h1    *h1Client       // plaintext HTTP/1.1 to any address
	h1t   *http.Transport // its fallback for streamed bodies and upgrades
	h2c   *http.Transport // plaintext HTTP/2 prior knowledge
	dial  net.Dialer

	mu   sync.Mutex
	mesh map[meshKey]meshRT
}

// meshRT is the pooled transport to one peer proxy.
type meshRT interface {
	http.RoundTripper
	CloseIdleConnections()
}

type meshKey struct {
	addr, id string
	alpn     string
}

// Options tunes a Pool.
type Options struct {
	// Identity enables mTLS to endpoints that have an Identity.
	Identity *identity.Source
	// Mesh selects the inter-proxy HTTP protocol; empty means MeshAuto.
	Mesh MeshProtocol
	// IdleTimeout closes pooled connections unused for this long.
	IdleTimeout time.Duration
	// ConnectTimeout bounds a TCP connect.
	ConnectTimeout time.Duration
	// Mark is set as SO_MARK on every upstream connection (0: none); see
	// package sockmark.
	Mark uint32
}

// New returns an empty pool.
func New(o Options) *Pool {
	if o.Mesh == "" {
		o.Mesh = MeshAuto
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 90 * time.Second
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	p := &Pool{ids: o.Identity, proto: o.Mesh, mesh: map[meshKey]meshRT{}}
	p.dial = net.Dialer{Timeout: o.ConnectTimeout, KeepAlive: 30 * time.Second, Control: sockmark.Control(o.Mark)}
	p.h1t = p.transport(o.IdleTimeout)
	p.h1t.DialContext = p.dialHTTP
	p.h1 = newH1Client(p.dialHTTP, p.h1t, o.IdleTimeout)
	p.h2c = p.transport(o.IdleTimeout)
	// HTTP/2 flushes every frame on its own; see package coalesce.
	p.h2c.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := p.dialHTTP(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return coalesce.New(c), nil
	}
	p.h2c.Protocols = new(http.Protocols)
	p.h2c.Protocols.SetUnencryptedHTTP2(true)
	return p
}

// dialHTTP dials a connection whose reads and writes skip the runtime's
// system call path (package rawtcp): for HTTP and for mTLS. Opaque TCP to a
// plaintext endpoint keeps the plain connection, for splice(2).
func (p *Pool) dialHTTP(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := p.dial.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return rawtcp.Wrap(c), nil
}

func (p *Pool) transport(idle time.Duration) *http.Transport {
	return &http.Transport{
		// A proxy forwards what it got: no transparent gzip, no env proxy.
		DisableCompression:  true,
		Proxy:               nil,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     idle,
		WriteBufferSize:     16 << 10,
		ReadBufferSize:      16 << 10,
	}
}

// RoundTripper returns the transport for ep: plaintext when ep has no
// Identity, otherwise mTLS to ep's proxy verifying exactly ep.Identity. The
// request's URL host is replaced by ep.Address; its Host header is kept. A
// request whose ProtoMajor is 2 (the app spoke h2c) goes upstream as HTTP/2.
func (p *Pool) RoundTripper(ep meshconfig.Endpoint) http.RoundTripper {
	return endpointRT{p: p, ep: ep}
}

type endpointRT struct {
	p  *Pool
	ep meshconfig.Endpoint
}

func (rt endpointRT) RoundTrip(req *http.Request) (*http.Response, error) {
	observe(req.Context(), rt.ep)
	out := *req
	u := *req.URL
	u.Host = rt.ep.Address
	u.Scheme = "http"
	out.URL = &u
	if rt.ep.Identity == "" {
		return rt.p.local(req).RoundTrip(&out)
	}
	id, err := spiffeid.FromString(rt.ep.Identity)
	if err != nil {
		return nil, err
	}
	if rt.p.ids == nil {
		return nil, errors.New("endpoint requires mTLS but the proxy has no identity")
	}
	u.Scheme = "https"
	alpn := rt.p.meshALPN(req)
	if req.ProtoMajor == 2 {
		out.Header = req.Header.Clone()
		out.Header.Set(HeaderOrigProto, "HTTP/2")
	} else if _, ok := req.Header[HeaderOrigProto]; ok {
		// Only this proxy says what its client spoke.
		out.Header = req.Header.Clone()
		delete(out.Header, HeaderOrigProto)
	}
	return rt.p.meshTransport(rt.ep.Address, id, alpn).RoundTrip(&out)
}

// meshALPN is the protocol req travels in to a peer proxy. Every weft-proxy
// inbound listener has offered both h2 and http/1.1 (identity.ServerConfig),
// so the choice is the caller's alone.
func (p *Pool) meshALPN(req *http.Request) string {
	switch {
	case isUpgrade(req), p.proto == MeshH1:
		// HTTP/2 cannot carry an Upgrade (no extended CONNECT here).
		return identity.ALPNH1
	case p.proto == MeshAuto && req.ProtoMajor == 1:
		return identity.ALPNH1
	}
	return identity.ALPNH2
}

// Local returns the plaintext transport for req to an app or an unmeshed
// endpoint: h2c when the request came in over HTTP/2, HTTP/1.1 otherwise.
func (p *Pool) Local(h2 bool) http.RoundTripper {
	if h2 {
		return p.h2c
	}
	return p.h1
}

func (p *Pool) local(req *http.Request) http.RoundTripper {
	if req.ProtoMajor == 2 {
		return p.h2c
	}
	return p.h1
}

func isUpgrade(r *http.Request) bool {
	for _, v := range r.Header["Connection"] {
		if strings.Contains(strings.ToLower(v), "upgrade") {
			return true
		}
	}
	return false
}

func (p *Pool) meshTransport(addr string, id spiffeid.ID, alpn string) meshRT {
	k := meshKey{addr: addr, id: id.String(), alpn: alpn}
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.mesh[k]; ok {
		return t
	}
	t := p.transport(p.h1t.IdleConnTimeout)
	t.ForceAttemptHTTP2 = alpn == identity.ALPNH2
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return p.dialTLS(ctx, addr, id, alpn)
	}
	t.DialTLSContext = dial
	var rt meshRT = t
	if alpn == identity.ALPNH1 {
		// HTTP/1.1 between proxies: the same inline client as to the
		// application, over mTLS; upgrades and streamed bodies go
		// through t.
		h := newH1Client(dial, t, p.h1t.IdleConnTimeout)
		h.scheme = "https"
		rt = h
	}
	p.mesh[k] = rt
	return rt
}

// DialTCP opens an opaque stream to ep: plain TCP, or mTLS with ALPN
// weft/tcp to ep's proxy when ep has an Identity.
func (p *Pool) DialTCP(ctx context.Context, ep meshconfig.Endpoint) (net.Conn, error) {
	if ep.Identity == "" {
		return p.dial.DialContext(ctx, "tcp", ep.Address)
	}
	id, err := spiffeid.FromString(ep.Identity)
	if err != nil {
		return nil, err
	}
	return p.dialTLS(ctx, ep.Address, id, identity.ALPNTCP)
}

func (p *Pool) dialTLS(ctx context.Context, addr string, id spiffeid.ID, alpn string) (net.Conn, error) {
	if p.ids == nil {
		return nil, errors.New("endpoint requires mTLS but the proxy has no identity")
	}
	raw, err := p.dialHTTP(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if alpn == identity.ALPNH2 {
		// One system call for the frames (each its own TLS record) that
		// a round of work produced; see package coalesce.
		raw = coalesce.New(raw)
	}
	c := tls.Client(raw, p.ids.ClientConfig(id, alpn))
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// Retain closes the mesh transports of endpoints not in keep (by address),
// so that connections to pods that left the snapshot do not linger.
func (p *Pool) Retain(keep map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, t := range p.mesh {
		if !keep[k.addr] {
			t.CloseIdleConnections()
			delete(p.mesh, k)
		}
	}
}

// CloseIdle closes every idle pooled connection.
func (p *Pool) CloseIdle() {
	p.h1.CloseIdleConnections()
	p.h2c.CloseIdleConnections()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.mesh {
		t.CloseIdleConnections()
	}
}

// Plain returns a transport that sends each request in plaintext to its URL
// host, over h2c when the request's ProtoMajor is 2 and HTTP/1.1 otherwise.
// The inbound side uses it to call the local application.
func (p *Pool) Plain() http.RoundTripper { return plainRT{p} }

type plainRT struct{ p *Pool }

func (rt plainRT) RoundTrip(req *http.Request) (*http.Response, error) {
	return rt.p.local(req).RoundTrip(req)
}

type observedKey struct{}

// Observed is filled in by the pool's round trippers with what the upstream
// connection was, so the caller's metrics can label by TLS and peer identity
// whichever forwarder chose the endpoint.
type Observed struct {
	TLS      bool
	Identity string
}

// WithObserved returns a context whose requests report into o.
func WithObserved(ctx context.Context, o *Observed) context.Context {
	return context.WithValue(ctx, observedKey{}, o)
}

// ObservedIn returns the Observed that requests with ctx report into, or
// nil. A server that serves a connection's requests one at a time can put
// one in the connection's context and reset it for each request, instead of
// deriving a context (and a request) per request.
func ObservedIn(ctx context.Context) *Observed {
	o, _ := ctx.Value(observedKey{}).(*Observed)
	return o
}

func observe(ctx context.Context, ep meshconfig.Endpoint) {
	if o := ObservedIn(ctx); o != nil {
		o.TLS = ep.Identity != ""
		o.Identity = ep.Identity
	}
}
