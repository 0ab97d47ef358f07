package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/upstream"
)

// recorder is an application that remembers every request it received.
type recorder struct {
	mu   sync.Mutex
	seen []*http.Request
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	rc.mu.Lock()
	rc.seen = append(rc.seen, r.Clone(r.Context()))
	rc.mu.Unlock()
	w.Header().Set("X-Seen-URI", r.RequestURI)
	w.Header().Set("X-Seen-Upgrade", r.Header.Get("Upgrade"))
	w.Header().Set("X-Seen-Client-Id", r.Header.Get(upstream.HeaderClientID))
	fmt.Fprint(w, "app")
}

func (rc *recorder) uris() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []string
	for _, r := range rc.seen {
		out = append(out, r.RequestURI)
	}
	return out
}

// appPort is the port of a loopback app address.
func appPort(t *testing.T, app string) uint16 {
	ap, err := netip.ParseAddrPort(app)
	if err != nil {
		t.Fatal(err)
	}
	return ap.Port()
}

// inboundSnap is an inbound-only snapshot for the app's port.
func inboundSnap(port uint16, proto meshconfig.Protocol, def meshconfig.DefaultPolicy, ps ...meshconfig.AuthorizationPolicy) *meshconfig.Snapshot {
	return &meshconfig.Snapshot{
		Version: "authz-1", TrustDomain: "cluster.local", MTLSMode: meshconfig.MTLSPermissive,
		Inbound: meshconfig.Inbound{
			Ports:         []meshconfig.InboundPort{{Port: port, Name: "http", Protocol: proto}},
			DefaultPolicy: def,
			Policies:      ps,
		},
	}
}

func denyPaths(paths ...string) meshconfig.AuthorizationPolicy {
	var pm []meshconfig.PathMatch
	for _, p := range paths {
		pm = append(pm, meshconfig.PathMatch{Type: meshconfig.MatchPathPrefix, Value: p})
	}
	return meshconfig.AuthorizationPolicy{Source: "shop/deny-admin", Action: meshconfig.ActionDeny,
		Rules: []meshconfig.AuthorizationRule{{To: []meshconfig.Operation{{Paths: pm}}}}}
}

// plainInbound is a proxy whose inbound listener serves plaintext clients
// (no identity: every caller is unauthenticated) in front of app.
func plainInbound(t *testing.T, app string, snap *meshconfig.Snapshot) *Proxy {
	return startProxy(t, Config{InboundAddr: "127.0.0.1:0", InboundTarget: app}, snap)
}

// rawResult is what a raw client saw.
type rawResult struct {
	status int
	body   string
	closed bool // the proxy closed the connection after answering
}

// rawHTTP writes req as bytes to addr and reads one response, then whether
// the connection was closed. The deadline only keeps a broken proxy from
// hanging the test; nothing is measured.
func rawHTTP(t *testing.T, addr, req string) rawResult {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return rawResult{closed: true}
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	out := rawResult{status: res.StatusCode, body: string(b)}
	if res.Close {
		// Reading on must end: EOF, never a second response.
		rest, _ := io.ReadAll(br)
		out.closed = len(rest) == 0
		if len(rest) > 0 {
			t.Errorf("bytes after a closing response: %q", rest)
		}
	}
	return out
}

// TestInboundPathAttacks: a Deny on /admin holds against every spelling of
// it; ambiguous spellings are refused with 400; the app never sees a path
// under /admin, and allowed requests reach it in the canonical form.
func TestInboundPathAttacks(t *testing.T) {
	rec := &recorder{}
	app := serve(t, rec)
	p := plainInbound(t, app, inboundSnap(appPort(t, app), "", meshconfig.DefaultAllow, denyPaths("/admin")))
	addr := p.Addr("inbound")
	cases := map[string]int{
		"/admin":                        403,
		"/admin/users":                  403,
		"/ADMIN":                        403,
		"/Admin/x":                      403,
		"/%61dmin":                      403,
		"/%41DMIN":                      403,
		"//admin":                       403,
		"///admin//x":                   403,
		"/./admin":                      403,
		"/x/../admin":                   403,
		"/x/%2e%2e/admin":               403,
		"/x/%2E%2E/admin":               403,
		"/x/.%2e/admin":                 403,
		`/x\..\admin`:                   403,
		`\admin`:                        400, // not origin-form
		"/admin;jsessionid=1":           403,
		"/admin;x/users":                403,
		"/admin/":                       403,
		"/admin?x=1":                    403,
		"http://backend/x/%2e%2e/admin": 403,
		"http://BACKEND./admin":         403,
		"http://other/admin":            400, // absolute form disagrees with Host
		"/admin%2fusers":                400,
		"/x%2f..%2fadmin":               400,
		"/x%5c..%5cadmin":               400,
		"/x/..;/admin":                  400,
		"/;/admin":                      400,
		"/%c0%ae%c0%ae/admin":           400,
		"/x/%c0%af/admin":               400,
		"/admin%00":                     400,
		"/adm%0din":                     400,
		"/%zz":                          400,
		"/admin%":                       400,
		"/%2":                           400,
		"/public":                       200,
		"/adminx":                       200,
	}
	for target, want := range cases {
		t.Run(target, func(t *testing.T) {
			r := rawHTTP(t, addr, "GET "+target+" HTTP/1.1\r\nHost: backend\r\n\r\n")
			if r.status != want {
				t.Errorf("GET %s: %d %q, want %d", target, r.status, r.body, want)
			}
			if want == 403 && !strings.Contains(r.body, "denied") {
				t.Errorf("403 body %q", r.body)
			}
			if want == 400 && !r.closed {
				t.Errorf("GET %s: connection kept open after 400", target)
			}
		})
	}
	denied := 0
	for _, want := range cases {
		if want == 403 {
			denied++
		}
	}
	for _, u := range rec.uris() {
		if l := strings.ToLower(u); l == "/admin" || strings.HasPrefix(l, "/admin/") || strings.HasPrefix(l, "/admin?") {
			t.Errorf("app received %q", u)
		}
	}
	if n := testutil.ToFloat64(p.authzMetrics.Decisions("http", "http", "deny", "deny_policy")); int(n) != denied {
		t.Errorf("deny metric = %v, want %d", n, denied)
	}
}

// TestInboundCanonicalForwarding: what the policy decided on is exactly what
// the application receives.
func TestInboundCanonicalForwarding(t *testing.T) {
	rec := &recorder{}
	app := serve(t, rec)
	p := plainInbound(t, app, inboundSnap(appPort(t, app), "", meshconfig.DefaultAllow))
	for in, want := range map[string]string{
		"/a/./b//c/../d?q=%2F#frag": "/a/b/d?q=%2F",
		"/%7euser/%41":              "/~user/A",
		"/caf%c3%a9":                "/caf%C3%A9",
		`/x\y`:                      "/x/y",
		"/a%3bb":                    "/a%3Bb",
	} {
		r := rawHTTP(t, p.Addr("inbound"), "GET "+in+" HTTP/1.1\r\nHost: backend\r\n\r\n")
		if r.status != 200 {
			t.Errorf("%s: %d", in, r.status)
		}
		got := rec.uris()
		if len(got) == 0 || got[len(got)-1] != want {
			t.Errorf("%s: app saw %q, want %q", in, got, want)
		}
	}
}

// TestInboundSmuggling: request heads that two parsers could frame
// differently get 400 and a closed connection, and nothing smuggled inside
// them reaches the application.
func TestInboundSmuggling(t *testing.T) {
	rec := &recorder{}
	app := serve(t, rec)
	p := plainInbound(t, app, inboundSnap(appPort(t, app), "", meshconfig.DefaultAllow, denyPaths("/admin")))
	smuggled := "GET /admin HTTP/1.1\r\nHost: backend\r\n\r\n"
	cases := map[string]string{
		"CL.TE":                  "POST / HTTP/1.1\r\nHost: backend\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
		"TE.CL":                  "POST / HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n" + smuggled,
		"duplicate CL":           "POST / HTTP/1.1\r\nHost: backend\r\nContent-Length: 0\r\nContent-Length: 38\r\n\r\n" + smuggled,
		"same CL twice":          "POST / HTTP/1.1\r\nHost: backend\r\nContent-Length: 38\r\nContent-Length: 38\r\n\r\n" + smuggled,
		"CL list":                "POST / HTTP/1.1\r\nHost: backend\r\nContent-Length: 0, 38\r\n\r\n" + smuggled,
		"CL sign":                "POST / HTTP/1.1\r\nHost: backend\r\nContent-Length: +38\r\n\r\n" + smuggled,
		"TE identity":            "POST / HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
		"TE twice":               "POST / HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"TE unknown":             "POST / HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
		"TE on HTTP/1.0":         "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"TE space before colon":  "POST / HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
		"obs-fold":               "GET / HTTP/1.1\r\nHost: backend\r\nX-A: a\r\n  folded\r\n\r\n",
		"obs-fold TE":            "POST / HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
		"bare LF":                "GET / HTTP/1.1\nHost: backend\n\n",
		"bare LF in header":      "GET / HTTP/1.1\r\nHost: backend\r\nX-A: a\nX-B: b\r\n\r\n",
		"bare CR":                "GET / HTTP/1.1\r\nHost: backend\r\nX-A: a\rX-B: b\r\n\r\n",
		"NUL in value":           "GET / HTTP/1.1\r\nHost: backend\r\nX-A: a\x00b\r\n\r\n",
		"invalid header name":    "GET / HTTP/1.1\r\nHost: backend\r\nX A: b\r\n\r\n",
		"empty header name":      "GET / HTTP/1.1\r\nHost: backend\r\n: b\r\n\r\n",
		"two Hosts":              "GET / HTTP/1.1\r\nHost: backend\r\nHost: admin\r\n\r\n",
		"no Host":                "GET / HTTP/1.1\r\n\r\n",
		"absolute vs Host":       "GET http://admin.internal/ HTTP/1.1\r\nHost: backend\r\n\r\n",
		"CONNECT":                "CONNECT admin:443 HTTP/1.1\r\nHost: admin:443\r\n\r\n",
		"HTTP/0.9 style":         "GET /\r\n\r\n",
		"two spaces":             "GET  / HTTP/1.1\r\nHost: backend\r\n\r\n",
		"HTTP/1.2":               "GET / HTTP/1.2\r\nHost: backend\r\n\r\n",
		"lowercase version":      "GET / http/1.1\r\nHost: backend\r\n\r\n",
		"oversized head":         "GET / HTTP/1.1\r\nHost: backend\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n",
		"OPTIONS-only asterisk":  "GET * HTTP/1.1\r\nHost: backend\r\n\r\n",
		"fragment-less smuggled": "GET /ok HTTP/1.1\r\nHost: backend\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
	}
	for name, req := range cases {
		t.Run(name, func(t *testing.T) {
			r := rawHTTP(t, p.Addr("inbound"), req)
			if r.status != 400 && r.status != 0 {
				t.Errorf("status %d %q, want 400", r.status, r.body)
			}
			if !r.closed {
				t.Errorf("connection kept open")
			}
		})
	}
	if u := rec.uris(); len(u) != 0 {
		t.Errorf("app received %q", u)
	}
	// A broken chunked body is found once the head went on: the request
	// fails and the connection ends; what follows is never parsed.
	for name, req := range map[string]string{
		"bad chunk size":      "POST / HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n" + smuggled,
		"chunk size overflow": "POST / HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n" + smuggled,
		"chunk without CRLF":  "POST / HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n" + smuggled,
		"chunk bare LF":       "POST / HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n" + smuggled,
	} {
		t.Run(name, func(t *testing.T) {
			r := rawHTTP(t, p.Addr("inbound"), req)
			if r.status == 200 || !r.closed {
				t.Errorf("status %d, closed %v", r.status, r.closed)
			}
		})
	}
	for _, u := range rec.uris() {
		if u != "/" {
			t.Errorf("app received %q", u)
		}
	}
}

// TestInboundKeepAliveFraming: well-formed pipelined requests with chunked
// and sized bodies and trailers all get through, in order, on one
// connection; a body that looks like a request is only a body.
func TestInboundKeepAliveFraming(t *testing.T) {
	rec := &recorder{}
	app := serve(t, rec)
	p := plainInbound(t, app, inboundSnap(appPort(t, app), "", meshconfig.DefaultAllow, denyPaths("/admin")))
	body := "GET /admin HTTP/1.1\r\nHost: backend\r\n\r\n"
	reqs := "POST /one HTTP/1.1\r\nHost: backend\r\nContent-Length: " + fmt.Sprint(len(body)) + "\r\n\r\n" + body +
		"POST /two HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: chunked\r\n\r\n" +
		fmt.Sprintf("%x;ext=1\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n", len(body), body) +
		"\r\nGET /three HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n"
	c, err := net.Dial("tcp", p.Addr("inbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, reqs)
	br := bufio.NewReader(c)
	for i := range 3 {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("response %d: %d", i, res.StatusCode)
		}
	}
	if got := strings.Join(rec.uris(), " "); got != "/one /two /three" {
		t.Errorf("app saw %q", got)
	}
}

// TestInboundH2CUpgradeStripped: an h2c upgrade is not forwarded, so the
// application can never switch the connection to HTTP/2 behind the proxy.
// Other upgrades still work (TestWebSocketUpgrade), and an upgrade request
// that is not answered with 101 closes the connection.
func TestInboundH2CUpgradeStripped(t *testing.T) {
	rec := &recorder{}
	app := serve(t, rec)
	p := plainInbound(t, app, inboundSnap(appPort(t, app), "", meshconfig.DefaultAllow))
	r := rawHTTP(t, p.Addr("inbound"), "GET / HTTP/1.1\r\nHost: backend\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	if r.status != 200 || !r.closed {
		t.Fatalf("status %d, closed %v: want 200 and closed (the head reader stopped at the upgrade)", r.status, r.closed)
	}
	rec.mu.Lock()
	if len(rec.seen) != 1 || rec.seen[0].Header.Get("Upgrade") != "" || rec.seen[0].Header.Get("Http2-Settings") != "" {
		t.Errorf("app saw %v", rec.seen)
	}
	rec.mu.Unlock()
	r = rawHTTP(t, p.Addr("inbound"), "GET / HTTP/1.1\r\nHost: backend\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if r.status != 200 || !r.closed {
		t.Errorf("upgrade answered %d: connection closed %v, want 200 and closed", r.status, r.closed)
	}
	// Denied: the connection still ends (no request may follow an upgrade
	// request unchecked).
	deny := inboundSnap(appPort(t, app), "", meshconfig.DefaultDeny)
	deny.Version = "authz-2"
	if err := p.Apply(deny); err != nil {
		t.Fatal(err)
	}
	r = rawHTTP(t, p.Addr("inbound"), "GET / HTTP/1.1\r\nHost: backend\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if r.status != 403 || !r.closed {
		t.Errorf("denied upgrade answered %d: connection closed %v, want 403 and closed", r.status, r.closed)
	}
}

// TestInboundIdentityHeaderForged: a client cannot claim an identity by
// sending the header the proxy sets for the app.
func TestInboundIdentityHeaderForged(t *testing.T) {
	rec := &recorder{}
	app := serve(t, rec)
	p := plainInbound(t, app, inboundSnap(appPort(t, app), "", meshconfig.DefaultAllow))
	r := rawHTTP(t, p.Addr("inbound"), "GET / HTTP/1.1\r\nHost: backend\r\n"+upstream.HeaderClientID+": spiffe://cluster.local/ns/ops/sa/admin\r\n\r\n")
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if v := rec.seen[0].Header.Values(upstream.HeaderClientID); len(v) != 0 {
		t.Errorf("app saw forged identity %q", v)
	}
}
