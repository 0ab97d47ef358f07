package sidecar

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"time"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/authz"
	"github.com/weftmesh/weft/proxy/detect"
	"github.com/weftmesh/weft/proxy/httpguard"
	"github.com/weftmesh/weft/proxy/identity"
	"github.com/weftmesh/weft/proxy/internal/coalesce"
	"github.com/weftmesh/weft/proxy/internal/rawtcp"
	"github.com/weftmesh/weft/proxy/metrics"
	"github.com/weftmesh/weft/proxy/origdst"
	"github.com/weftmesh/weft/proxy/pipe"
	"github.com/weftmesh/weft/proxy/upstream"
)

// tlsRecordHandshake is the first byte of a TLS ClientHello.
const tlsRecordHandshake = 0x16

// handleInbound serves one connection to the pod: mTLS from another proxy,
// or plaintext where the mode allows it.
func (p *Proxy) handleInbound(c *conn) {
	target, port, ok := p.inboundTarget(c)
	if !ok {
		p.metrics.Refused(metrics.Inbound, "no_target")
		c.Close()
		return
	}
	c.info.target = target
	t := p.table.Load()
	strict := p.cfg.Identity != nil && t.snap.MTLSMode != meshconfig.MTLSPermissive
	isTLS := strict
	if p.cfg.Identity != nil && !strict {
		c.br = bufio.NewReaderSize(c.Conn, 4096)
		c.SetReadDeadline(time.Now().Add(p.cfg.DetectTimeout))
		b, err := c.br.Peek(1)
		c.SetReadDeadline(time.Time{})
		if err != nil && len(b) == 0 && !isTimeout(err) {
			c.Close()
			return
		}
		isTLS = len(b) == 1 && b[0] == tlsRecordHandshake
	}
	if isTLS {
		p.inboundTLS(c, port)
		return
	}
	if strict {
		p.metrics.Refused(metrics.Inbound, "plaintext")
		c.Close()
		return
	}
	kind := detect.Opaque
	if !t.opaque[port] && !inboundOpaque(t.snap, port) {
		if c.br == nil {
			c.br = bufio.NewReaderSize(c.Conn, 4096)
		}
		var err error
		if kind, err = detect.Peek(c.Conn, c.br, p.cfg.DetectTimeout); err != nil && c.br.Buffered() == 0 {
			c.Close()
			return
		}
	}
	if kind == detect.Opaque {
		p.inboundTCP(c, nil, port)
		return
	}
	if kind == detect.HTTP1 {
		p.serveH1(p.guardH1(c, c), c, p.inQ, p.inHandler)
		return
	}
	hc := coalesced(c, true)
	if !p.inQ.push(context.Background(), hc) {
		hc.Close()
	}
}

// guardH1 puts the strict HTTP/1 head reader between the client (over, a
// plaintext *conn or a TLS connection on it) and net/http. The result is a
// *conn again so that the server finds the connection's info.
func (p *Proxy) guardH1(c *conn, over net.Conn) *conn {
	g := httpguard.NewH1Conn(over, nil)
	g.OnReject = func(err error) {
		reason := guardReason(err)
		p.authzMetrics.Refused(reason)
		p.log.Info("Inbound HTTP/1 request refused", "reason", reason, "client", c.RemoteAddr().String(), "peer", c.info.peer)
	}
	return &conn{Conn: g, info: c.info, done: func(*conn) {}}
}

func inboundOpaque(s *meshconfig.Snapshot, port uint16) bool {
	for _, ip := range s.Inbound.Ports {
		if ip.Port == port {
			return ip.Protocol == meshconfig.ProtocolOpaque
		}
	}
	return false
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// inboundTarget is the local application address: loopback at the original
// destination port when iptables redirected the connection, else the
// configured static target. The loopback is of the original destination's
// family, so that an application listening on IPv6 only ([::1] or an
// IPv6-only [::]) is reached by clients that used the pod's IPv6 address, as
// it is without the mesh.
func (p *Proxy) inboundTarget(c *conn) (string, uint16, bool) {
	if tcp, ok := rawtcp.TCP(c.Conn); ok {
		if dst, err := origdst.Get(tcp); err == nil {
			local, _ := netip.ParseAddrPort(c.LocalAddr().String())
			if dst.Port() != local.Port() {
				lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
				if dst.Addr().Is6() && !dst.Addr().Is4In6() {
					lo = netip.IPv6Loopback()
				}
				return netip.AddrPortFrom(lo, dst.Port()).String(), dst.Port(), true
			}
		}
	}
	if p.cfg.InboundTarget == "" {
		return "", 0, false
	}
	ap, err := netip.ParseAddrPort(p.cfg.InboundTarget)
	if err != nil {
		return p.cfg.InboundTarget, 0, true
	}
	return p.cfg.InboundTarget, ap.Port(), true
}

func (p *Proxy) inboundTLS(c *conn, port uint16) {
	// Writes under TLS are coalesced for HTTP/2 (each frame is a record
	// of its own, the batch one system call) and go straight for the rest.
	cc := coalesced(c, false)
	tc := tls.Server(cc, p.tlsCfg)
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.HeaderTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		p.metrics.Refused(metrics.Inbound, "tls_handshake")
		p.log.Debug("Inbound TLS handshake failed", "client", c.RemoteAddr().String(), "err", err)
		cc.Close()
		return
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != identity.ALPNH2 {
		cc.Conn.(*coalesce.Conn).Direct()
	}
	c.info.tls = true
	if id, ok := identity.PeerID(cs); ok {
		c.info.peer = id.String()
	}
	if cs.NegotiatedProtocol == identity.ALPNTCP {
		p.inboundTCP(c, tc, port)
		return
	}
	if cs.NegotiatedProtocol == identity.ALPNH1 {
		p.serveH1(p.guardH1(c, tc), c, p.inQ, p.inHandler)
		return
	}
	if !p.inQ.push(context.Background(), tc) {
		tc.Close()
	}
}

// inboundTCP pipes client (c, or tc when it is TLS) to the application,
// if authorization allows the connection, for as long as it allows it.
func (p *Proxy) inboundTCP(c *conn, tc *tls.Conn, port uint16) {
	t := p.table.Load()
	label := t.inboundLabel(port)
	req := authz.Request{Port: port, Peer: c.info.peer}
	d := t.authz.Decide(&req)
	p.authzMetrics.Observe(label, false, d)
	if !d.Allow {
		p.metrics.Refused(metrics.Inbound, "unauthorized")
		p.log.Info("Inbound connection denied", "port", port, "peer", c.info.peer, "client", c.RemoteAddr().String(),
			"reason", d.Reason.String(), "policy", d.Policy)
		if tc != nil {
			tc.Close()
		}
		c.Close()
		return
	}
	var dialer net.Dialer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	app, err := dialer.DialContext(ctx, "tcp", c.info.target)
	cancel()
	if err != nil {
		p.metrics.Refused(metrics.Inbound, "connect")
		c.Close()
		return
	}
	client := rawtcp.Plain(c.Conn) // splice(2) between plain TCP connections
	var prefix []byte
	if tc != nil {
		client = tc
	} else {
		prefix = c.buffered()
	}
	c.info.tunnel.Store(true)
	stop := p.watchTCP(t, req, label, func() {
		// The sockets, without TLS's close_notify: the application's
		// first, so that nothing more reaches it while the client's
		// side closes.
		app.Close()
		c.Close()
	})
	pipe.Go(client, app, prefix, func(r pipe.Result) {
		stop()
		c.Close()
		p.metrics.TCPBytes(metrics.Inbound, label, c.info.tls, p.metrics.Identity(c.info.peer), r.AToB, r.BToA)
	})
}

// serveInbound checks, authorizes and forwards one request. The request is
// first rewritten to its canonical form (httpguard.Check), and that same
// form is what the policy sees and what the application receives.
func (p *Proxy) serveInbound(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 {
		growStack(r.ProtoMinor) // a new goroutine per stream
	}
	info := infoFrom(r.Context())
	port := inboundPort(info)
	t := p.table.Load()
	label := t.inboundLabel(port)
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	chk, err := httpguard.Check(r)
	if err != nil {
		reason := guardReason(err)
		p.authzMetrics.Refused(reason)
		p.log.Info("Inbound HTTP request refused", "reason", reason, "method", r.Method, "peer", info.peer, "port", port)
		writeBadRequest(sw, r)
		p.record(r, sw, start, metrics.Inbound, label, info.tls, info.peer)
		return
	}
	req := authz.Request{Port: port, Peer: info.peer, HTTP: true, Method: r.Method, Path: chk.Path}
	d := t.authz.Decide(&req)
	p.authzMetrics.Observe(label, true, d)
	if !d.Allow {
		p.log.Info("Inbound request denied", "port", port, "peer", info.peer, "method", r.Method, "path", chk.Path,
			"reason", d.Reason.String(), "policy", d.Policy)
		if chk.Upgrade {
			// The HTTP/1 head reader stopped checking at this upgrade
			// request: nothing more may be read from this connection.
			sw.Header().Set("Connection", "close")
		}
		writeDenied(sw)
		p.record(r, sw, start, metrics.Inbound, label, info.tls, info.peer)
		return
	}
	var out http.ResponseWriter = sw
	var stop func()
	if chk.Upgrade {
		wreq := req // captured here, so that req itself stays on the stack
		out = &closeUnlessSwitched{ResponseWriter: sw, onHijack: func(c net.Conn) {
			// A tunnel has no next request to check: re-check it when the
			// snapshot changes, like opaque TCP.
			stop = p.watchTCP(t, wreq, label, func() { c.Close() })
		}}
	}
	// Deferred so that a response aborted with panic(http.ErrAbortHandler)
	// after its headers went out is still counted and its watcher stopped.
	defer func() {
		if stop != nil {
			stop()
		}
		p.record(r, sw, start, metrics.Inbound, label, info.tls, info.peer)
	}()
	p.inboundProxy.ServeHTTP(out, r)
}

// rewriteInbound points the request at the application and replaces the
// mesh headers: only the proxy may tell the app who the client is.
func (p *Proxy) rewriteInbound(pr *httputil.ProxyRequest) {
	info := infoFrom(pr.In.Context())
	pr.Out.URL.Host = info.target
	h := pr.Out.Header
	origH2 := h.Get(upstream.HeaderOrigProto) == "HTTP/2"
	h.Del(upstream.HeaderOrigProto)
	h.Del(upstream.HeaderClientID)
	if info.peer != "" {
		h.Set(upstream.HeaderClientID, info.peer)
	}
	// Between proxies a request may ride HTTP/2 or HTTP/1.1 whatever its
	// client spoke (the mesh protocol decides); the app gets the protocol
	// the client spoke, which the calling proxy marks when it was HTTP/2.
	// From a plaintext client, the one it spoke.
	pr.Out.ProtoMajor = 1
	if origH2 || (!info.tls && pr.In.ProtoMajor == 2) {
		pr.Out.ProtoMajor = 2
	}
}
