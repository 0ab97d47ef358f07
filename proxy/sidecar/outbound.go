package sidecar

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/detect"
	"github.com/weftmesh/weft/proxy/internal/rawtcp"
	"github.com/weftmesh/weft/proxy/metrics"
	"github.com/weftmesh/weft/proxy/origdst"
	"github.com/weftmesh/weft/proxy/pipe"
	"github.com/weftmesh/weft/proxy/upstream"
)

type infoKey struct{}

func infoFrom(ctx context.Context) *connInfo {
	if i, ok := ctx.Value(infoKey{}).(*connInfo); ok {
		return i
	}
	return &connInfo{}
}

// connInfoOf finds our connection data under whatever net/http was given.
func connInfoOf(c net.Conn) *connInfo {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if cc, ok := c.(*conn); ok {
		return cc.info
	}
	return &connInfo{}
}

// handleOutbound serves one connection from the pod's application. static,
// when valid, replaces SO_ORIGINAL_DST.
func (p *Proxy) handleOutbound(c *conn, static netip.AddrPort) {
	dst := static
	if !dst.IsValid() {
		tcp, ok := rawtcp.TCP(c.Conn)
		var err error
		if ok {
			dst, err = origdst.Get(tcp)
		}
		if !ok || err != nil {
			p.metrics.Refused(metrics.Outbound, "no_original_dst")
			p.log.Debug("No original destination", "client", c.RemoteAddr().String(), "err", err)
			c.Close()
			return
		}
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	c.info.dst, c.info.dstAddr = dst, dst.String()
	t := p.table.Load()
	d := t.dests[dst]

	kind := detect.NeedMore
	switch {
	case t.opaque[dst.Port()] || (d != nil && d.proto == meshconfig.ProtocolOpaque):
		kind = detect.Opaque
	case d != nil && d.proto != meshconfig.ProtocolDetect:
		kind = detect.HTTP1 // a hint: net/http tells HTTP/1 from the h2 preface itself
	default:
		c.br = bufio.NewReaderSize(c.Conn, 4096)
		var err error
		if kind, err = detect.Peek(c.Conn, c.br, p.cfg.DetectTimeout); err != nil && c.br.Buffered() == 0 {
			c.Close() // closed or broken before sending anything
			return
		}
	}
	if kind == detect.Opaque {
		p.outboundTCP(c, d, dst)
		return
	}
	// HTTP/2 gets its writes coalesced and its reads buffered; a
	// destination declared HTTP/2 or gRPC skipped detection, and an
	// HTTP/1 client of it (a misconfiguration) is served the same way.
	if kind == detect.HTTP2 || (d != nil && (d.proto == meshconfig.ProtocolHTTP2 || d.proto == meshconfig.ProtocolGRPC)) {
		hc := coalesced(c, true)
		if !p.outQ.push(context.Background(), hc) {
			hc.Close()
		}
		return
	}
	p.serveH1(c, c, p.outQ, p.outHandler)
}

func (p *Proxy) outboundTCP(c *conn, d *dest, dst netip.AddrPort) {
	ep := meshconfig.Endpoint{Address: dst.String()}
	label := metrics.Unknown
	if d != nil {
		label = d.label
		var ok bool
		if ep, ok = d.lb.pick(); !ok {
			p.metrics.Refused(metrics.Outbound, "no_endpoint")
			c.Close()
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	up, err := p.pool.DialTCP(ctx, ep)
	cancel()
	if err != nil {
		p.metrics.Refused(metrics.Outbound, "connect")
		p.log.Debug("Upstream connect failed", "dst", label, "endpoint", ep.Address, "err", err)
		c.Close()
		return
	}
	prefix := c.buffered()
	c.info.tunnel.Store(true)
	// Pipe the plain *net.TCPConn under the wrappers, so TCP to TCP splices.
	pipe.Go(rawtcp.Plain(c.Conn), up, prefix, func(r pipe.Result) {
		c.Close()
		p.metrics.TCPBytes(metrics.Outbound, label, ep.Identity != "", p.metrics.Identity(ep.Identity), r.AToB, r.BToA)
	})
}

func (p *Proxy) serveOutbound(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 {
		growStack(r.ProtoMinor) // a new goroutine per stream
	}
	info := infoFrom(r.Context())
	sw := &statusWriter{ResponseWriter: w}
	obs := &sw.obs // one allocation for both
	d := p.table.Load().dests[info.dst]
	h, label := p.passthrough, metrics.Unknown
	if d != nil {
		h, label = d.handler, d.label
		// Only the pool's endpoint round trippers report into obs; the
		// passthrough always goes in plaintext to the original address.
		if lo := upstream.ObservedIn(r.Context()); lo != nil {
			// The HTTP/1.1 lane's, for one request at a time.
			*lo = upstream.Observed{}
			obs = lo
		} else {
			r = r.WithContext(upstream.WithObserved(r.Context(), obs))
		}
	}
	start := time.Now()
	// Deferred: a forwarder whose response breaks after the headers went
	// out (the client hung up, the upstream reset) aborts with
	// panic(http.ErrAbortHandler), and that request must still be counted.
	defer func() { p.record(r, sw, start, metrics.Outbound, label, obs.TLS, obs.Identity) }()
	h.ServeHTTP(sw, r)
}

// record writes the metrics and the access log line of one request.
func (p *Proxy) record(r *http.Request, sw *statusWriter, start time.Time, dir, label string, tls bool, peer string) {
	code, at := sw.code, sw.at
	if code == 0 {
		// Hijacked (a successful Upgrade) or nothing written at all.
		code, at = http.StatusSwitchingProtocols, time.Now()
		if r.Header.Get("Upgrade") == "" {
			code = http.StatusOK
		}
	}
	p.metrics.Request(dir, label, tls, p.metrics.Identity(peer), code, at.Sub(start).Seconds())
	if p.cfg.AccessLog != nil {
		p.cfg.AccessLog.Info("Request", "direction", dir, "dst", label, "method", r.Method, "host", r.Host,
			"path", r.URL.Path, "proto", r.Proto, "status", code, "duration", time.Since(start), "tls", tls, "peer", peer)
	}
}
