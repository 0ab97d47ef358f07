package sidecar

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/authz"
	"github.com/weftmesh/weft/proxy/identity"
)

const opsAdmin = "spiffe://cluster.local/ns/ops/sa/admin"

// meshPair is a server proxy (mTLS inbound in front of app) and client
// proxies with the given identities, each reached on its static listener.
func meshPair(t *testing.T, app string, proto meshconfig.Protocol, snap *meshconfig.Snapshot, clientIDs ...string) (*Proxy, map[string]string) {
	k := newPKI(t)
	ss, _, _ := k.source(t, serverID)
	srv := startProxy(t, Config{InboundAddr: "127.0.0.1:0", InboundTarget: app, Identity: ss}, snap)
	addrs := map[string]string{}
	for _, id := range clientIDs {
		cs, _, _ := k.source(t, id)
		cl := startProxy(t, Config{Static: []Static{{Listen: "127.0.0.1:0", Dst: vip}}, Identity: cs},
			snapshot(meshconfig.Endpoint{Address: srv.Addr("inbound"), Identity: serverID}, proto, ""))
		addrs[id] = cl.Addr("127.0.0.1:0")
	}
	return srv, addrs
}

// TestInboundAuthzIdentities: callers are told apart by their verified
// SPIFFE IDs (identity, namespace), methods and paths; Deny wins; an Allow
// policy denies what it does not match; the app sees who called.
func TestInboundAuthzIdentities(t *testing.T) {
	rec := &recorder{}
	app := serve(t, rec)
	port := appPort(t, app)
	snap := inboundSnap(port, "", meshconfig.DefaultAllow,
		meshconfig.AuthorizationPolicy{Source: "shop/api-readers", Action: meshconfig.ActionAllow, Rules: []meshconfig.AuthorizationRule{{
			From: []meshconfig.Source{{Namespaces: []string{"shop"}}},
			To:   []meshconfig.Operation{{Methods: []string{"GET"}, Paths: []meshconfig.PathMatch{{Type: meshconfig.MatchPathPrefix, Value: "/api"}}}},
		}}},
		meshconfig.AuthorizationPolicy{Source: "shop/no-secrets", Action: meshconfig.ActionDeny, Rules: []meshconfig.AuthorizationRule{{
			From: []meshconfig.Source{{Identities: []string{clientID}}},
			To:   []meshconfig.Operation{{Paths: []meshconfig.PathMatch{{Type: meshconfig.MatchPathPrefix, Value: "/api/secret"}}}},
		}}},
	)
	snap.MTLSMode = meshconfig.MTLSStrict
	srv, clients := meshPair(t, app, "", snap, clientID, opsAdmin)
	for _, tc := range []struct {
		id, method, path string
		want             int
	}{
		{clientID, "GET", "/api/orders", 200},
		{clientID, "GET", "/api//orders/../items", 200},
		{clientID, "POST", "/api/orders", 403},
		{clientID, "GET", "/api/secret", 403},
		{clientID, "GET", "/API/Secret/x", 403},
		{clientID, "GET", "/other", 403},
		{opsAdmin, "GET", "/api/orders", 403},
	} {
		req, _ := http.NewRequest(tc.method, "http://"+clients[tc.id]+tc.path, nil)
		req.Host = "backend.shop"
		res, err := h1Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("%s %s %s: %d %q, want %d", tc.id, tc.method, tc.path, res.StatusCode, body, tc.want)
		}
		if tc.want == 200 && res.Header.Get("X-Seen-Client-Id") != tc.id {
			t.Errorf("app saw client id %q", res.Header.Get("X-Seen-Client-Id"))
		}
	}
	if got := strings.Join(rec.uris(), " "); got != "/api/orders /api/items" {
		t.Errorf("app saw %q", got)
	}
	// A policy change applies to the next request on the same connections.
	next := *snap
	next.Version = "authz-2"
	next.Inbound.Policies = nil
	next.Inbound.DefaultPolicy = meshconfig.DefaultDeny
	if err := srv.Apply(&next); err != nil {
		t.Fatal(err)
	}
	res, err := h1Client().Get("http://" + clients[clientID] + "/api/orders")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 403 {
		t.Errorf("after default deny: %d", res.StatusCode)
	}
}

// TestInboundTCPAuthz: opaque connections get an L4 decision; a rule that
// needs HTTP (paths) cannot allow them; a snapshot that no longer allows an
// open connection closes it.
func TestInboundTCPAuthz(t *testing.T) {
	app := tcpEcho(t, "hello\n")
	port := appPort(t, app)
	allowFrontend := meshconfig.AuthorizationPolicy{Source: "shop/tcp", Action: meshconfig.ActionAllow, Rules: []meshconfig.AuthorizationRule{{
		From: []meshconfig.Source{{Identities: []string{clientID}}},
	}}}
	snap := inboundSnap(port, meshconfig.ProtocolOpaque, meshconfig.DefaultDeny, allowFrontend)
	srv, clients := meshPair(t, app, meshconfig.ProtocolOpaque, snap, clientID, opsAdmin)

	banner := func(addr string) (net.Conn, string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		b := make([]byte, 6)
		n, _ := io.ReadFull(c, b)
		return c, string(b[:n])
	}
	c, got := banner(clients[clientID])
	defer c.Close()
	if got != "hello\n" {
		t.Fatalf("allowed client got %q", got)
	}
	if c2, got := banner(clients[opsAdmin]); got != "" {
		t.Errorf("other identity got %q", got)
	} else {
		c2.Close()
	}

	// Paths cannot be checked on opaque bytes: such an Allow never matches.
	withPath := *snap
	withPath.Version = "authz-2"
	withPath.Inbound.Policies = []meshconfig.AuthorizationPolicy{{Source: "shop/tcp", Action: meshconfig.ActionAllow, Rules: []meshconfig.AuthorizationRule{{
		From: []meshconfig.Source{{Identities: []string{clientID}}},
		To:   []meshconfig.Operation{{Paths: []meshconfig.PathMatch{{Type: meshconfig.MatchPathPrefix, Value: "/"}}}},
	}}}}
	if err := srv.Apply(&withPath); err != nil {
		t.Fatal(err)
	}
	// The open connection is closed by the proxy: the read ends with EOF
	// (the app says nothing until it gets EOF itself, so a timeout here
	// means the connection was left open).
	if n, err := c.Read(make([]byte, 16)); n != 0 || isTimeout(err) || err == nil {
		t.Errorf("revoked connection: read %d bytes, %v", n, err)
	}
	if c3, got := banner(clients[clientID]); got != "" {
		t.Errorf("path rule allowed opaque TCP: %q", got)
	} else {
		c3.Close()
	}
}

// TestInboundBadPolicyRejected: a snapshot with a policy the proxy cannot
// enforce exactly is refused whole; the previous one stays.
func TestInboundBadPolicyRejected(t *testing.T) {
	rec := &recorder{}
	app := serve(t, rec)
	p := plainInbound(t, app, inboundSnap(appPort(t, app), "", meshconfig.DefaultAllow, denyPaths("/admin")))
	bad := inboundSnap(appPort(t, app), "", meshconfig.DefaultAllow, meshconfig.AuthorizationPolicy{
		Source: "shop/bad", Action: meshconfig.ActionDeny, Rules: []meshconfig.AuthorizationRule{{
			From: []meshconfig.Source{{ServiceAccounts: []string{"no-namespace"}}},
		}}})
	bad.Version = "authz-bad"
	if err := p.Apply(bad); err == nil {
		t.Fatal("bad policy applied")
	}
	if v := p.Snapshot().Version; v != "authz-1" {
		t.Fatalf("snapshot now %s", v)
	}
	if r := rawHTTP(t, p.Addr("inbound"), "GET /admin HTTP/1.1\r\nHost: b\r\n\r\n"); r.status != 403 {
		t.Errorf("previous policy lost: %d", r.status)
	}
}

// TestInboundPermissive: with an identity and Permissive mode, plaintext
// callers are unauthenticated and mesh callers keep their identity, on the
// same listener.
func TestInboundPermissive(t *testing.T) {
	rec := &recorder{}
	app := serve(t, rec)
	snap := inboundSnap(appPort(t, app), "", meshconfig.DefaultDeny,
		meshconfig.AuthorizationPolicy{Source: "shop/public", Action: meshconfig.ActionAllow, Rules: []meshconfig.AuthorizationRule{{
			From: []meshconfig.Source{{Unauthenticated: true}},
			To:   []meshconfig.Operation{{Paths: []meshconfig.PathMatch{{Type: meshconfig.MatchPathPrefix, Value: "/public"}}}},
		}}},
		meshconfig.AuthorizationPolicy{Source: "shop/mesh", Action: meshconfig.ActionAllow, Rules: []meshconfig.AuthorizationRule{{
			From: []meshconfig.Source{{Namespaces: []string{"shop"}}},
		}}},
	)
	srv, clients := meshPair(t, app, "", snap, clientID)
	get := func(base, path string) int {
		res, err := h1Client().Get("http://" + base + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, tc := range []struct {
		base, path string
		want       int
	}{
		{srv.Addr("inbound"), "/public/x", 200},
		{srv.Addr("inbound"), "/private", 403},
		{clients[clientID], "/private", 200},
	} {
		if got := get(tc.base, tc.path); got != tc.want {
			t.Errorf("%s%s: %d, want %d", tc.base, tc.path, got, tc.want)
		}
	}
}

// TestInboundSmugglingOverMTLS: a meshed peer with a valid identity that
// writes raw HTTP/1 (ALPN http/1.1) gets the same strict head reader as a
// plaintext client, and its identity is what the policy sees.
func TestInboundSmugglingOverMTLS(t *testing.T) {
	rec := &recorder{}
	app := serve(t, rec)
	k := newPKI(t)
	ss, _, _ := k.source(t, serverID)
	cs, _, _ := k.source(t, clientID)
	snap := inboundSnap(appPort(t, app), "", meshconfig.DefaultDeny, meshconfig.AuthorizationPolicy{
		Source: "shop/frontend", Action: meshconfig.ActionAllow, Rules: []meshconfig.AuthorizationRule{{
			From: []meshconfig.Source{{Identities: []string{clientID}}},
			To:   []meshconfig.Operation{{Paths: []meshconfig.PathMatch{{Type: meshconfig.MatchPathPrefix, Value: "/api"}}}},
		}}})
	snap.MTLSMode = meshconfig.MTLSStrict
	p := startProxy(t, Config{InboundAddr: "127.0.0.1:0", InboundTarget: app, Identity: ss}, snap)
	cfg := cs.ClientConfig(spiffeid.RequireFromString(serverID), identity.ALPNH1)
	raw := func(req string) rawResult {
		c, err := tls.Dial("tcp", p.Addr("inbound"), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second)) // safety net only
		io.WriteString(c, req)
		br := bufio.NewReader(c)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			return rawResult{closed: true}
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		out := rawResult{status: res.StatusCode}
		if res.Close {
			rest, _ := io.ReadAll(br)
			out.closed = len(rest) == 0
		}
		return out
	}
	if r := raw("GET /api/x HTTP/1.1\r\nHost: backend\r\n\r\n"); r.status != 200 {
		t.Errorf("allowed request: %d", r.status)
	}
	if r := raw("GET /other HTTP/1.1\r\nHost: backend\r\n\r\n"); r.status != 403 {
		t.Errorf("unmatched request: %d", r.status)
	}
	r := raw("POST /api/x HTTP/1.1\r\nHost: backend\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/smuggled HTTP/1.1\r\nHost: backend\r\n\r\n")
	if r.status != 400 || !r.closed {
		t.Errorf("CL.TE over mTLS: %d, closed %v", r.status, r.closed)
	}
	for _, u := range rec.uris() {
		if u != "/api/x" {
			t.Errorf("app received %q", u)
		}
	}
}

// TestWatchTCPRechecks: an open tunnel is re-checked by every snapshot
// until its watch stops and is closed once, and one registered after a
// snapshot that no longer allows it (a decision made just before that
// snapshot) is closed at once.
func TestWatchTCPRechecks(t *testing.T) {
	allow := meshconfig.AuthorizationPolicy{Source: "shop/tcp", Action: meshconfig.ActionAllow, Rules: []meshconfig.AuthorizationRule{{
		From: []meshconfig.Source{{Identities: []string{clientID}}},
	}}}
	allowing := inboundSnap(9000, meshconfig.ProtocolOpaque, meshconfig.DefaultDeny, allow)
	denying := inboundSnap(9000, meshconfig.ProtocolOpaque, meshconfig.DefaultDeny)
	denying.Version = "authz-2"
	again := *allowing
	again.Version = "authz-1b"
	p := startProxy(t, Config{}, allowing)
	req := authz.Request{Port: 9000, Peer: clientID}
	apply := func(s *meshconfig.Snapshot) {
		t.Helper()
		if err := p.Apply(s); err != nil {
			t.Fatal(err)
		}
	}
	// registered returns the open tunnels and whether each was found no
	// longer allowed (its close runs on a goroutine of its own).
	registered := func() (n, revoked int) {
		p.tunnels.mu.Lock()
		defer p.tunnels.mu.Unlock()
		for w := range p.tunnels.set {
			n++
			if w.closed.Load() {
				revoked++
			}
		}
		return n, revoked
	}
	// A tunnel's closes, counted.
	type tunnel struct{ closes chan struct{} }
	newTunnel := func() *tunnel { return &tunnel{closes: make(chan struct{}, 4)} }
	closeAll := func(tn *tunnel) func() { return func() { tn.closes <- struct{}{} } }
	closedOnce := func(tn *tunnel) {
		t.Helper()
		select {
		case <-tn.closes:
		case <-time.After(10 * time.Second):
			t.Fatal("the revoked tunnel was not closed")
		}
		// Give a second close (which must not come) time to show.
		time.Sleep(50 * time.Millisecond)
		if len(tn.closes) != 0 {
			t.Fatal("a revoked tunnel was closed more than once")
		}
	}

	t1 := p.table.Load()
	first := newTunnel()
	stop := p.watchTCP(t1, req, "shop/tcp", closeAll(first))
	apply(&again)
	if n, revoked := registered(); n != 1 || revoked != 0 {
		t.Fatalf("after a snapshot that still allows it: %d tunnels, %d revoked", n, revoked)
	}
	apply(denying)
	if n, revoked := registered(); n != 1 || revoked != 1 {
		t.Fatalf("after a snapshot that denies it: %d tunnels, %d revoked", n, revoked)
	}
	apply(&again)
	apply(denying)
	closedOnce(first)
	stop()
	if n, _ := registered(); n != 0 {
		t.Fatalf("%d tunnels registered after stop", n)
	}

	// Decided with t1, registered after the denying snapshot.
	late := newTunnel()
	stopLate := p.watchTCP(t1, req, "shop/tcp", closeAll(late))
	defer stopLate()
	if n, revoked := registered(); n != 1 || revoked != 1 {
		t.Fatalf("a tunnel registered after the snapshot that revokes it: %d tunnels, %d revoked", n, revoked)
	}
	closedOnce(late)
}
