// Package sidecar is the weft-proxy data plane: the outbound listener (the
// pod's redirected outgoing connections), the inbound listener (connections
// to the pod, mTLS from other proxies) and the admin listener. For every
// connection it recovers where the client meant to go, detects the protocol,
// and either serves HTTP (through the destination's forwarder) or pipes
// opaque bytes, recording golden metrics on the way.
//
// It must not import k8s.io, must not dial except through upstream.Pool (or
// plain TCP to the local application), and must not take a lock on the
// request path: the configuration is a compiled table behind an atomic
// pointer.
package sidecar

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/authz"
	"github.com/weftmesh/weft/proxy/identity"
	"github.com/weftmesh/weft/proxy/internal/rawtcp"
	"github.com/weftmesh/weft/proxy/metrics"
	"github.com/weftmesh/weft/proxy/route"
	"github.com/weftmesh/weft/proxy/upstream"
)

// Static is an outbound listener with a fixed original destination, for
// running without iptables (benchmarks, tests): connections accepted on
// Listen are treated as if they had been addressed to Dst.
type Static struct {
	Listen string
	Dst    netip.AddrPort
}

// Config configures a Proxy. Zero durations and sizes get defaults.
type Config struct {
	// OutboundAddr receives redirected outgoing connections ("" disables).
	OutboundAddr string
	// InboundAddr receives connections to the pod ("" disables).
	InboundAddr string
	// AdminAddr serves /metrics, /ready, /live, /config, /identity ("" disables).
	AdminAddr string
	// Static adds outbound listeners with fixed destinations.
	Static []Static
	// InboundTarget is the application address used when an inbound
	// connection was not redirected by iptables (static mode).
	InboundTarget string
	// Identity enables mTLS; nil means plaintext only.
	Identity *identity.Source
	// RequireSnapshot keeps Ready false until a snapshot has been applied
	// (the control-plane mode, where the proxy starts with none).
	RequireSnapshot bool
	// Mesh chooses the HTTP protocol between proxies (upstream.MeshAuto
	// when empty).
	Mesh upstream.MeshProtocol
	// Forwarders builds per-service-port HTTP handlers (DefaultForwarder
	// when nil).
	Forwarders ForwarderFactory
	// OpaquePorts are never detected, in addition to the snapshot's.
	OpaquePorts []uint16
	// DetectTimeout is how long a silent client is given before its
	// connection is treated as opaque.
	DetectTimeout time.Duration
	// HeaderTimeout bounds reading request headers and the TLS handshake.
	HeaderTimeout time.Duration
	// IdleTimeout closes idle HTTP keep-alive connections (and idle
	// connections to the admin listener).
	IdleTimeout time.Duration
	// TCPIdleTimeout closes opaque TCP connections and upgraded tunnels
	// (WebSocket) that carried no data either way for this long (0: one
	// hour, as Envoy's TCP proxy; negative: never).
	TCPIdleTimeout time.Duration
	// SocketMark is set as SO_MARK on the proxy's upstream connections
	// (0: none), for proxy-init's --proxy-mark; see package sockmark.
	SocketMark uint32
	// MaxConns caps open connections across the outbound and inbound
	// listeners (0: 10000). The admin listener is not counted, so that the
	// kubelet's probes and Prometheus's scrapes are still answered when
	// traffic holds every slot.
	MaxConns int
	// AppProbes are the application's probes the injector moved to the
	// admin port (/app-probe/<container>/<kind>); see ParseAppProbes.
	AppProbes []AppProbe
	// Pprof serves Go's runtime profiles under /debug/pprof/ on the admin
	// listener (off by default).
	Pprof bool
	// Registry receives the metrics (a new one when nil).
	Registry *prometheus.Registry
	// Log is the proxy's logger; AccessLog, when set, gets one line per
	// HTTP request.
	Log, AccessLog *slog.Logger
}

// Proxy is one sidecar. Create with New, Apply a snapshot, Start, Shutdown.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	pool    *upstream.Pool
	metrics *metrics.Metrics
	// authzMetrics counts authorization decisions and refused requests.
	authzMetrics *authz.Metrics
	table        atomic.Pointer[table]
	tunnels      openTunnels // inbound connections re-checked by each snapshot
	conns        tracker
	tlsCfg       *tls.Config

	outHTTP, inHTTP *http.Server
	outQ, inQ       *queue
	outHandler      http.Handler
	inHandler       http.Handler
	draining        atomic.Bool // Shutdown has begun
	admin           *http.Server
	inboundProxy    http.Handler
	passthrough     http.Handler

	mu        sync.Mutex
	listeners map[string]net.Listener
	started   atomic.Bool
	// stopSweep ends the idle sweep (sweepIdle) at Shutdown.
	stopSweep chan struct{}
	stopOnce  sync.Once
	// configured is set by the first Apply after New's empty snapshot.
	configured atomic.Bool
	wg         sync.WaitGroup
}

// New checks cfg and builds a Proxy with an empty snapshot.
func New(cfg Config) (*Proxy, error) {
	if cfg.Forwarders == nil {
		cfg.Forwarders = DefaultForwarder
	}
	mesh, err := upstream.ParseMeshProtocol(string(cfg.Mesh))
	if err != nil {
		return nil, err
	}
	cfg.Mesh = mesh
	if cfg.DetectTimeout == 0 {
		cfg.DetectTimeout = 3 * time.Second
	}
	if cfg.HeaderTimeout == 0 {
		cfg.HeaderTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 90 * time.Second
	}
	if cfg.TCPIdleTimeout == 0 {
		cfg.TCPIdleTimeout = time.Hour
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 10000
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	p := &Proxy{
		cfg:       cfg,
		log:       cfg.Log,
		metrics:   metrics.New(cfg.Registry),
		pool:      upstream.New(upstream.Options{Identity: cfg.Identity, Mesh: cfg.Mesh, IdleTimeout: cfg.IdleTimeout, Mark: cfg.SocketMark}),
		conns:     tracker{conns: map[*conn]struct{}{}, max: cfg.MaxConns},
		listeners: map[string]net.Listener{},
		stopSweep: make(chan struct{}),
	}
	am, err := authz.NewMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("authorization metrics: %w", err)
	}
	p.authzMetrics = am
	if cfg.Identity != nil {
		p.tlsCfg = cfg.Identity.ServerConfig()
	}
	// Only this proxy may tell a caller that nothing reached the
	// application: the application's own Weft-Not-Sent is dropped.
	appRT := p.pool.Plain()
	p.inboundProxy = newReverseProxy(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		res, err := appRT.RoundTrip(r)
		if res != nil {
			res.Header.Del(route.HeaderNotSent)
		}
		return res, err
	}), p.rewriteInbound)
	p.passthrough = newReverseProxy(p.pool.Plain(), func(pr *httputil.ProxyRequest) {
		pr.Out.URL.Host = infoFrom(pr.In.Context()).dstAddr
	})
	if err := p.apply(&meshconfig.Snapshot{Version: "empty"}); err != nil {
		return nil, err
	}
	return p, nil
}

// Pool is the upstream pool, for forwarders built outside this package.
func (p *Proxy) Pool() *upstream.Pool { return p.pool }

// Apply compiles s and swaps it in. Requests already being served finish
// with the table they started with. On error nothing changes.
func (p *Proxy) Apply(s *meshconfig.Snapshot) error {
	if s == nil {
		return errors.New("no snapshot")
	}
	if err := p.apply(s); err != nil {
		return err
	}
	p.configured.Store(true)
	return nil
}

func (p *Proxy) apply(s *meshconfig.Snapshot) error {
	if err := s.Validate(); err != nil {
		return err
	}
	t, err := compile(s, p.pool, p.cfg.Forwarders, p.cfg.OpaquePorts)
	if err != nil {
		return err
	}
	p.metrics.SetIdentities(t.ids)
	old := p.table.Swap(t)
	if old != nil {
		p.recheckTunnels()
	}
	if old != nil && old.snap.Version != "empty" {
		p.pool.Retain(t.endpoints())
	}
	p.log.Info("Snapshot applied", "version", s.Version, "services", len(s.Outbound.Services), "inboundPorts", len(s.Inbound.Ports))
	return nil
}

// Snapshot returns the snapshot in use.
func (p *Proxy) Snapshot() *meshconfig.Snapshot { return p.table.Load().snap }

// Metrics returns the proxy's metrics (for reload accounting by callers).
func (p *Proxy) Metrics() *metrics.Metrics { return p.metrics }

// Addr returns the bound address of a listener: "outbound", "inbound",
// "admin" or a Static Listen value; "" when not listening.
func (p *Proxy) Addr(name string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ln, ok := p.listeners[name]; ok {
		return ln.Addr().String()
	}
	return ""
}

// Ready says whether the proxy can serve: listening, holding an identity
// when mTLS is configured, and holding a snapshot when RequireSnapshot is
// set.
func (p *Proxy) Ready() bool {
	return p.started.Load() &&
		(p.cfg.Identity == nil || p.cfg.Identity.Current() != nil) &&
		(!p.cfg.RequireSnapshot || p.configured.Load())
}

// Start binds every listener and serves in the background. It fails without
// serving anything if one listener cannot be bound.
func (p *Proxy) Start() error {
	var lc net.ListenConfig
	bind := func(name, addr string) (net.Listener, error) {
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s %s: %w", name, addr, err)
		}
		p.mu.Lock()
		p.listeners[name] = ln
		p.mu.Unlock()
		return ln, nil
	}
	type acceptor struct {
		ln     net.Listener
		handle func(*conn)
		dir    string
	}
	var acc []acceptor
	fail := func(err error) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, ln := range p.listeners {
			ln.Close()
		}
		return err
	}
	if p.cfg.OutboundAddr != "" {
		ln, err := bind("outbound", p.cfg.OutboundAddr)
		if err != nil {
			return fail(err)
		}
		acc = append(acc, acceptor{ln, func(c *conn) { p.handleOutbound(c, netip.AddrPort{}) }, metrics.Outbound})
	}
	for _, s := range p.cfg.Static {
		ln, err := bind(s.Listen, s.Listen)
		if err != nil {
			return fail(err)
		}
		dst := s.Dst
		acc = append(acc, acceptor{ln, func(c *conn) { p.handleOutbound(c, dst) }, metrics.Outbound})
	}
	if p.cfg.InboundAddr != "" {
		ln, err := bind("inbound", p.cfg.InboundAddr)
		if err != nil {
			return fail(err)
		}
		acc = append(acc, acceptor{ln, p.handleInbound, metrics.Inbound})
	}
	var adminLn net.Listener
	if p.cfg.AdminAddr != "" {
		ln, err := bind("admin", p.cfg.AdminAddr)
		if err != nil {
			return fail(err)
		}
		adminLn = ln
	}

	errLog := log.New(slogWriter{p.log}, "", 0)
	p.outQ, p.inQ = newQueue(nil), newQueue(nil)
	p.outHandler = http.HandlerFunc(p.serveOutbound)
	p.outHTTP = p.httpServer(p.outHandler, errLog)
	p.inHandler = http.HandlerFunc(p.serveInbound)
	p.inHTTP = p.httpServer(p.inHandler, errLog)
	p.goServe(func() { p.outHTTP.Serve(p.outQ) })
	p.goServe(func() { p.inHTTP.Serve(p.inQ) })
	if adminLn != nil {
		p.admin = &http.Server{Handler: p.adminMux(), ReadHeaderTimeout: p.cfg.HeaderTimeout, IdleTimeout: p.cfg.IdleTimeout, ErrorLog: errLog}
		p.goServe(func() { p.admin.Serve(adminLn) })
	}
	for _, a := range acc {
		p.goServe(func() { p.acceptLoop(a.ln, a.dir, a.handle) })
	}
	if p.cfg.TCPIdleTimeout > 0 {
		p.goServe(func() { p.sweepIdle(p.cfg.TCPIdleTimeout) })
	}
	p.started.Store(true)
	return nil
}

func (p *Proxy) goServe(f func()) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
}

func (p *Proxy) httpServer(h http.Handler, errLog *log.Logger) *http.Server {
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	protos.SetUnencryptedHTTP2(true)
	return &http.Server{
		// 16 KiB, the RFC 9113 default, instead of Go's 1 MiB: a peer may
		// not send a larger frame than we advertised (h2spec 4.2).
		HTTP2:             &http.HTTP2Config{MaxReadFrameSize: 16 << 10},
		Handler:           h,
		ReadHeaderTimeout: p.cfg.HeaderTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		Protocols:         protos,
		ErrorLog:          errLog,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, infoKey{}, connInfoOf(c))
		},
	}
}

func (p *Proxy) acceptLoop(ln net.Listener, dir string, handle func(*conn)) {
	for {
		raw, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off instead of spinning.
			p.log.Error("Accept failed", "listener", ln.Addr().String(), "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		c := &conn{Conn: rawtcp.Wrap(raw), info: &connInfo{dir: dir}, done: p.connDone}
		if !p.conns.add(c) {
			p.metrics.Refused(dir, "limit")
			raw.Close()
			continue
		}
		p.metrics.ConnOpen(dir, "any")
		go handle(c)
	}
}

func (p *Proxy) connDone(c *conn) {
	p.conns.remove(c)
	p.metrics.ConnClose(c.info.dir, "any")
}

// Shutdown stops accepting, lets in-flight requests and streams finish until
// ctx ends, then closes what is left.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	for _, ln := range p.listeners {
		ln.Close()
	}
	p.mu.Unlock()
	drained := p.conns.startDrain()
	p.draining.Store(true)
	p.conns.wakeIdleLanes()
	var wg sync.WaitGroup
	for _, s := range []*http.Server{p.outHTTP, p.inHTTP} {
		if s != nil {
			wg.Add(1)
			go func() { defer wg.Done(); s.Shutdown(ctx) }()
		}
	}
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		err = fmt.Errorf("drain: %d connections still open, closed: %w", p.conns.count(), ctx.Err())
		p.conns.closeAll()
	}
	wg.Wait()
	if p.admin != nil {
		p.admin.Close()
	}
	p.pool.CloseIdle()
	p.stopOnce.Do(func() { close(p.stopSweep) })
	p.wg.Wait()
	return err
}

// slogWriter sends net/http's internal error log (bad requests, TLS
// handshake noise) to the debug level.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(b []byte) (int, error) {
	w.l.Debug("HTTP server", "msg", string(b))
	return len(b), nil
}
