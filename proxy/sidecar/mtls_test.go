package sidecar

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/identity"
	"github.com/weftmesh/weft/proxy/internal/testpki"
	"github.com/weftmesh/weft/proxy/route"
)

// badSource builds an identity straight from a leaf, bypassing Load's own
// checks, to play a misconfigured or malicious peer.
func badSource(t *testing.T, leaf *testpki.Leaf, roots ...*testpki.CA) *identity.Source {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	b := x509bundle.New(td)
	for _, r := range roots {
		b.AddX509Authority(r.Cert)
	}
	chain := [][]byte{leaf.Cert.Raw}
	for _, c := range leaf.Chain {
		chain = append(chain, c.Raw)
	}
	id := spiffeid.RequireFromString(leaf.Cert.URIs[0].String())
	s := &identity.Source{}
	s.Set(&identity.Material{Cert: &tls.Certificate{Certificate: chain, PrivateKey: leaf.Key, Leaf: leaf.Cert}, ID: id, Bundle: b})
	return s
}

// TestPeerRefused: the client proxy refuses a server proxy that is not the
// expected identity or whose certificate is not a valid SVID of the trust
// domain, and the server proxy refuses such a client. The app is never
// reached and the client gets 502.
func TestPeerRefused(t *testing.T) {
	k := newPKI(t)
	other := testpki.NewRoot(t, "other root")
	otherIssuer := other.Intermediate(t, "other issuer")
	hour := time.Hour
	bad := map[string]func(id string) *testpki.Leaf{
		"wrong identity": func(string) *testpki.Leaf {
			return k.issuer.Leaf(t, "spiffe://cluster.local/ns/evil/sa/mallory", testpki.LeafOpts{})
		},
		"untrusted CA": func(id string) *testpki.Leaf { return otherIssuer.Leaf(t, id, testpki.LeafOpts{}) },
		"expired leaf": func(id string) *testpki.Leaf {
			return k.issuer.Leaf(t, id, testpki.LeafOpts{NotBefore: time.Now().Add(-2 * hour), NotAfter: time.Now().Add(-hour)})
		},
		"CA leaf": func(id string) *testpki.Leaf { return k.issuer.Leaf(t, id, testpki.LeafOpts{IsCA: true}) },
	}
	var reached atomic.Int32
	app := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	good := func(id string) *identity.Source {
		return badSource(t, k.issuer.Leaf(t, id, testpki.LeafOpts{}), k.root)
	}
	// Control: the same setup with valid SVIDs works, so the refusals below
	// are caused by the bad certificates and nothing else.
	bad["valid"] = func(id string) *testpki.Leaf { return k.issuer.Leaf(t, id, testpki.LeafOpts{}) }
	for name, mk := range bad {
		for _, side := range []string{"server", "client"} {
			if name == "wrong identity" && side == "client" {
				continue // the server accepts any identity of the trust domain (authorization is not mTLS's job)
			}
			t.Run(name+" at "+side, func(t *testing.T) {
				ss, cs := good(serverID), good(clientID)
				if side == "server" {
					ss = badSource(t, mk(serverID), k.root, other)
				} else {
					cs = badSource(t, mk(clientID), k.root, other)
				}
				// The honest side trusts only k.root.
				srv := startProxy(t, Config{InboundAddr: "127.0.0.1:0", InboundTarget: app, Identity: ss},
					&meshconfig.Snapshot{Version: "s", MTLSMode: meshconfig.MTLSStrict})
				cl := startProxy(t, Config{Static: []Static{{Listen: "127.0.0.1:0", Dst: vip}}, Identity: cs},
					snapshot(meshconfig.Endpoint{Address: srv.Addr("inbound"), Identity: serverID}, "", ""))
				// With the default mesh protocol an HTTP/1.1 client's request
				// goes over the HTTP/1.1 mesh pool and an h2c client's over the
				// HTTP/2 one: both must check the peer alike.
				for _, c := range []*http.Client{h1Client(), h2cClient()} {
					res, err := c.Get("http://" + cl.Addr("127.0.0.1:0") + "/")
					if err != nil {
						t.Fatal(err)
					}
					res.Body.Close()
					if name == "valid" {
						if res.StatusCode != http.StatusOK || reached.Swap(0) != 1 {
							t.Fatalf("valid peers, %s: status %d", res.Proto, res.StatusCode)
						}
						continue
					}
					if res.StatusCode != http.StatusBadGateway {
						t.Errorf("%s: status %d, want 502", res.Proto, res.StatusCode)
					}
					if reached.Load() != 0 {
						t.Fatalf("%s: the application was reached", res.Proto)
					}
				}
			})
		}
	}
}

// TestStrictRefusesPlaintext and permissive accepts it, stripping any forged
// identity header.
func TestInboundModes(t *testing.T) {
	k := newPKI(t)
	src, _, _ := k.source(t, serverID)
	app := echoApp(t)
	for _, tc := range []struct {
		mode meshconfig.MTLSMode
		ok   bool
	}{{meshconfig.MTLSStrict, false}, {meshconfig.MTLSPermissive, true}} {
		t.Run(string(tc.mode), func(t *testing.T) {
			srv := startProxy(t, Config{InboundAddr: "127.0.0.1:0", InboundTarget: app, Identity: src},
				&meshconfig.Snapshot{Version: "s", MTLSMode: tc.mode})
			req, _ := http.NewRequest("GET", "http://"+srv.Addr("inbound")+"/", nil)
			req.Header.Set("Weft-Client-Id", "spiffe://cluster.local/ns/admin/sa/root")
			res, err := h1Client().Do(req)
			if !tc.ok {
				if err == nil {
					res.Body.Close()
					t.Fatalf("plaintext accepted in strict mode: %d", res.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusCreated || res.Header.Get("X-Client-Id") != "" {
				t.Errorf("status %d, app saw client id %q (want none)", res.StatusCode, res.Header.Get("X-Client-Id"))
			}
		})
	}
}

// TestRotation: new certificates and a new root are picked up from the files
// while streams are open (an opaque TCP stream, and a gRPC bidirectional
// stream on the proxies' multiplexed HTTP/2 connection); the streams keep
// working and new connections use the new certificates. The rotation is an
// anchor rotation in two steps: first both roots trusted and leaves from
// the new one, then the old root removed, after which an old certificate
// could no longer be verified, so a working new connection proves that the
// new ones are presented.
func TestRotation(t *testing.T) {
	tcpApp := tcpEcho(t, "")
	tcpPath := twoHop(t, tcpApp, pathOpts{opaque: []uint16{vip.Port()}})
	grpcPath := twoHop(t, startGRPC(t), pathOpts{})
	ids := func(pr *Proxy) *identity.Source { return pr.cfg.Identity }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, err := net.Dial("tcp", tcpPath.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "before ")

	cc, err := grpc.NewClient("passthrough:///"+grpcPath.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	st, err := testgrpc.NewTestServiceClient(cc).FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	echo := func(step string) {
		t.Helper()
		body := []byte("stream message " + step)
		if err := st.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: body}}); err != nil {
			t.Fatalf("%s: send: %v", step, err)
		}
		if m, err := st.Recv(); err != nil || !bytes.Equal(m.GetPayload().GetBody(), body) {
			t.Fatalf("%s: receive: %v", step, err)
		}
	}
	echo("before")

	newRoot := testpki.NewRoot(t, "new root")
	newIssuer := newRoot.Intermediate(t, "new issuer")
	type proxyFiles struct {
		p    *Proxy
		dir  string
		id   string
		leaf *testpki.Leaf
	}
	var all []*proxyFiles
	for _, path := range []*path{tcpPath, grpcPath} {
		all = append(all, &proxyFiles{p: path.server, dir: path.serverDir, id: serverID},
			&proxyFiles{p: path.client, dir: path.clientDir, id: clientID})
	}
	oldSerial := map[*Proxy]string{}
	for _, f := range all {
		oldSerial[f.p] = ids(f.p).Current().Cert.Leaf.SerialNumber.String()
	}
	reload := func(step string) {
		t.Helper()
		for _, f := range all {
			if changed, err := ids(f.p).Reload(); err != nil || !changed {
				t.Fatalf("%s: reload: changed=%v err=%v", step, changed, err)
			}
		}
	}
	newTCPConn := func(step string) {
		t.Helper()
		c2, err := net.Dial("tcp", tcpPath.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		c2.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c2, "new")
		c2.(*net.TCPConn).CloseWrite()
		if got, err := io.ReadAll(c2); err != nil || string(got) != "NEW" {
			t.Fatalf("%s: new connection: %q %v", step, got, err)
		}
	}

	// Step 1: leaves from the new chain, both roots trusted.
	for _, f := range all {
		f.leaf = newIssuer.Leaf(t, f.id, testpki.LeafOpts{})
		f.leaf.Write(t, f.dir, tcpPath.pki.root, grpcPath.pki.root, newRoot)
	}
	reload("new leaves")
	for _, f := range all {
		if ids(f.p).Current().Cert.Leaf.SerialNumber.String() == oldSerial[f.p] {
			t.Fatal("a proxy still uses its old certificate")
		}
	}
	newTCPConn("new leaves")
	echo("after new leaves")

	// Step 2: the old roots are no longer trusted.
	for _, f := range all {
		f.leaf.Write(t, f.dir, newRoot)
	}
	reload("old roots removed")
	newTCPConn("old roots removed")
	// A new mesh connection of the gRPC path's proxies: the client proxy's
	// configuration for the server proxy, handshaking as the proxy would.
	// The server verifies the client's leaf against the new root only, and
	// the client sees the server's new leaf.
	cfg := ids(grpcPath.client).ClientConfig(spiffeid.RequireFromString(serverID), identity.ALPNH2)
	tc, err := tls.Dial("tcp", grpcPath.server.Addr("inbound"), cfg)
	if err != nil {
		t.Fatalf("mesh handshake after the old roots went: %v", err)
	}
	got := tc.ConnectionState().PeerCertificates[0].SerialNumber.String()
	tc.Close()
	if want := ids(grpcPath.server).Current().Cert.Leaf.SerialNumber.String(); got != want || got == oldSerial[grpcPath.server] {
		t.Fatalf("server presented serial %s, want the new %s", got, want)
	}
	// And the application's new calls keep working.
	cc2, err := grpc.NewClient("passthrough:///"+grpcPath.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc2.Close()
	if res, err := testgrpc.NewTestServiceClient(cc2).UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("new")}}); err != nil || string(res.GetPayload().GetBody()) != "new" {
		t.Fatalf("new gRPC call after the old roots went: %v %v", res, err)
	}

	// The streams opened before the rotation were not dropped.
	echo("after old roots removed")
	st.CloseSend()
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("gRPC stream end: %v", err)
	}
	io.WriteString(c, "after")
	c.(*net.TCPConn).CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "BEFORE AFTER" {
		t.Fatalf("open stream: %q %v", got, err)
	}
}

// TestRotationRejectsBadFiles: a key that does not match the certificate (a
// half-written rotation) is refused and the previous identity stays.
func TestRotationRejectsBadFiles(t *testing.T) {
	k := newPKI(t)
	src, f, _ := k.source(t, serverID)
	before := src.Current()
	other := k.issuer.Leaf(t, serverID, testpki.LeafOpts{})
	mixed := other.Write(t, t.TempDir(), k.root)
	copyFile(t, mixed.Cert, f.Cert) // new cert, old key
	if _, err := src.Reload(); err == nil {
		t.Fatal("mismatched key accepted")
	}
	if src.Current() != before {
		t.Fatal("identity changed after a rejected reload")
	}
}

func copyFile(t *testing.T, from, to string) {
	b, err := readFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFile(to, b); err != nil {
		t.Fatal(err)
	}
}

// TestAdmin: the admin endpoints report what an operator needs.
func TestAdmin(t *testing.T) {
	p := twoHop(t, echoApp(t), pathOpts{})
	admin := startProxy(t, Config{AdminAddr: "127.0.0.1:0", Identity: p.server.cfg.Identity, Registry: nil}, nil)
	get := func(path string) (int, string) {
		res, err := h1Client().Get("http://" + admin.Addr("admin") + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, _ := get("/ready"); code != 200 {
		t.Errorf("/ready %d", code)
	}
	if code, _ := get("/live"); code != 200 {
		t.Errorf("/live %d", code)
	}
	_, body := get("/identity")
	var id struct {
		ID    string   `json:"id"`
		Roots []string `json:"roots"`
	}
	if err := json.Unmarshal([]byte(body), &id); err != nil || id.ID != serverID || len(id.Roots) != 1 {
		t.Errorf("/identity = %s (%v)", body, err)
	}
	_, body = get("/config")
	if !strings.Contains(body, `"version": "empty"`) {
		t.Errorf("/config = %.200s", body)
	}
}

// TestPeerAppRefusedIsRetried: a server proxy whose application refuses
// the connection (a pod shutting down) tells the calling proxy that nothing
// was sent, and the caller retries the request on another endpoint; the
// marker never reaches the client. With no other endpoint the client gets
// the 502, without the marker.
func TestPeerAppRefusedIsRetried(t *testing.T) {
	k := newPKI(t)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadApp := dead.Addr().String()
	dead.Close()
	var reached atomic.Int32
	app := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	src := func(id string) *identity.Source {
		return badSource(t, k.issuer.Leaf(t, id, testpki.LeafOpts{}), k.root)
	}
	server := func(target string) *Proxy {
		return startProxy(t, Config{InboundAddr: "127.0.0.1:0", InboundTarget: target, Identity: src(serverID)},
			&meshconfig.Snapshot{Version: "s", MTLSMode: meshconfig.MTLSStrict})
	}
	down, up := server(deadApp), server(app)
	client := func(eps ...*Proxy) string {
		snap := snapshot(meshconfig.Endpoint{}, "", "")
		var list []meshconfig.Endpoint
		for _, p := range eps {
			list = append(list, meshconfig.Endpoint{Address: p.Addr("inbound"), Identity: serverID})
		}
		snap.Outbound.Services[0].Ports[0].DefaultBackends[0].Endpoints = list
		cl := startProxy(t, Config{Static: []Static{{Listen: "127.0.0.1:0", Dst: vip}}, Identity: src(clientID), Forwarders: RouteForwarders()}, snap)
		return "http://" + cl.Addr("127.0.0.1:0") + "/"
	}
	both := client(down, up)
	for i := range 20 {
		res, err := h1Client().Get(both)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK || res.Header.Get(route.HeaderNotSent) != "" {
			t.Fatalf("request %d: status %d, headers %v; want 200 from the live endpoint", i, res.StatusCode, res.Header)
		}
	}
	if n := reached.Load(); n != 20 {
		t.Errorf("the application got %d requests, want 20", n)
	}
	res, err := h1Client().Get(client(down))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway || res.Header.Get(route.HeaderNotSent) != "" {
		t.Errorf("only a refusing endpoint: status %d, headers %v; want 502 without %s", res.StatusCode, res.Header, route.HeaderNotSent)
	}

	// An application cannot claim that nothing reached it: its header is
	// dropped by its own proxy, so the caller does not retry.
	var liar atomic.Int32
	lying := server(serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		liar.Add(1)
		w.Header().Set(route.HeaderNotSent, "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	})))
	res, err = h1Client().Get(client(lying))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if liar.Load() != 1 || (res.StatusCode != http.StatusServiceUnavailable || res.Header.Get(route.HeaderNotSent) != "") {
		t.Errorf("the lying application's answer: status %d, headers %v; want its 503, without the header", res.StatusCode, res.Header)
	}
	if liar.Load() > 1 {
		t.Errorf("the lying application was called %d times", liar.Load())
	}
}
