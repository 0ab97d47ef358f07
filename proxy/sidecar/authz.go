package sidecar

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/weftmesh/weft/proxy/authz"
	"github.com/weftmesh/weft/proxy/httpguard"
)

// deniedBody is the short body of a 403; it names no policy, which would
// tell a caller what to forge.
const deniedBody = "access denied by mesh authorization policy\n"

func writeDenied(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(deniedBody)))
	w.WriteHeader(http.StatusForbidden)
	w.Write([]byte(deniedBody))
}

func writeBadRequest(w http.ResponseWriter, r *http.Request) {
	const body = "bad request\n"
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.ProtoMajor == 1 {
		// The rest of the connection cannot be trusted to frame the same
		// way in every parser.
		h.Set("Connection", "close")
	}
	w.WriteHeader(http.StatusBadRequest)
	w.Write([]byte(body))
}

func guardReason(err error) string {
	var ge *httpguard.Error
	if errors.As(err, &ge) {
		return ge.Reason
	}
	return "other"
}

// inboundPort is the application port a connection was addressed to.
func inboundPort(info *connInfo) uint16 {
	_, port, err := net.SplitHostPort(info.target)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(port)
	return uint16(n)
}

// closeUnlessSwitched marks an upgrade response that did not switch
// protocols with "Connection: close": the HTTP/1 guard let the bytes after
// the upgrade request through unchecked, so the connection must not carry
// another request.
//
// It also sees the hijack of a switched connection (a tunnel from then on)
// and hands the connection to onHijack, so that a policy change can close it.
type closeUnlessSwitched struct {
	http.ResponseWriter
	wrote    bool
	onHijack func(net.Conn)
}

// Hijack is found by http.ResponseController before it unwraps.
func (c *closeUnlessSwitched) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(c.ResponseWriter).Hijack()
	if err == nil && c.onHijack != nil {
		c.onHijack(conn)
	}
	return conn, brw, err
}

func (c *closeUnlessSwitched) WriteHeader(code int) {
	if !c.wrote && code != http.StatusSwitchingProtocols && code >= 200 {
		c.wrote = true
		c.ResponseWriter.Header().Set("Connection", "close")
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *closeUnlessSwitched) Write(b []byte) (int, error) {
	if !c.wrote {
		c.WriteHeader(http.StatusOK)
	}
	return c.ResponseWriter.Write(b)
}

func (c *closeUnlessSwitched) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// openTunnels are the open inbound opaque connections and upgraded tunnels:
// they have no next request to check, so every snapshot re-checks them.
// A registration rather than a goroutine per connection, whose stack an
// idle connection would hold for its whole life.
type openTunnels struct {
	mu  sync.Mutex
	set map[*openTunnel]struct{}
}

type openTunnel struct {
	req      authz.Request
	label    string
	closeAll func()
	closed   atomic.Bool
}

// watchTCP closes an open opaque connection or upgraded tunnel, allowed by
// table t, as soon as a newer snapshot no longer allows it, until stop is
// called.
func (p *Proxy) watchTCP(t *table, req authz.Request, label string, closeAll func()) (stop func()) {
	w := &openTunnel{req: req, label: label, closeAll: closeAll}
	p.tunnels.mu.Lock()
	if p.tunnels.set == nil {
		p.tunnels.set = map[*openTunnel]struct{}{}
	}
	p.tunnels.set[w] = struct{}{}
	p.tunnels.mu.Unlock()
	if p.table.Load() != t {
		// A snapshot applied since the decision may have re-checked the
		// open tunnels before this one was among them.
		p.recheck(w)
	}
	return func() {
		p.tunnels.mu.Lock()
		delete(p.tunnels.set, w)
		p.tunnels.mu.Unlock()
	}
}

// recheckTunnels re-checks every open tunnel against the table in use.
// apply calls it after each swap.
func (p *Proxy) recheckTunnels() {
	p.tunnels.mu.Lock()
	ws := make([]*openTunnel, 0, len(p.tunnels.set))
	for w := range p.tunnels.set {
		ws = append(ws, w)
	}
	p.tunnels.mu.Unlock()
	for _, w := range ws {
		p.recheck(w)
	}
}

func (p *Proxy) recheck(w *openTunnel) {
	t := p.table.Load()
	d := t.authz.Decide(&w.req)
	if d.Allow || w.closed.Swap(true) {
		return
	}
	p.authzMetrics.Observe(w.label, w.req.HTTP, d)
	p.log.Info("Open inbound connection closed: no longer authorized", "port", w.req.Port, "peer", w.req.Peer, "http", w.req.HTTP, "path", w.req.Path,
		"reason", d.Reason.String(), "policy", d.Policy, "snapshot", t.snap.Version)
	// Not on apply's goroutine: closing a TLS connection may send
	// close_notify, which can wait for a peer that does not read.
	go w.closeAll()
}
