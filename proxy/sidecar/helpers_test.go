package sidecar

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/identity"
	"github.com/weftmesh/weft/proxy/internal/testpki"
	"github.com/weftmesh/weft/proxy/upstream"
)

const (
	clientID = "spiffe://cluster.local/ns/shop/sa/frontend"
	serverID = "spiffe://cluster.local/ns/shop/sa/backend"
)

// vip is the service's virtual address in test snapshots. It is on loopback
// so that a lookup bug that falls back to dialing it never leaves the host.
var vip = netip.MustParseAddrPort("127.77.0.1:80")

type pki struct {
	root, issuer *testpki.CA
}

func newPKI(t *testing.T) *pki {
	root := testpki.NewRoot(t, "root")
	return &pki{root: root, issuer: root.Intermediate(t, "issuer")}
}

// source writes leaf and roots to a fresh directory and loads them.
func (p *pki) source(t *testing.T, id string) (*identity.Source, testpki.Files, string) {
	t.Helper()
	dir := t.TempDir()
	f := p.issuer.Leaf(t, id, testpki.LeafOpts{}).Write(t, dir, p.root)
	src, err := identity.NewSource(identity.Files{Cert: f.Cert, Key: f.Key, Bundle: f.Bundle}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	return src, f, dir
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startProxy(t *testing.T, cfg Config, snap *meshconfig.Snapshot) *Proxy {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = testLog(t)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if snap != nil {
		if err := p.Apply(snap); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return p
}

// snapshot routes vip to one endpoint.
func snapshot(ep meshconfig.Endpoint, proto meshconfig.Protocol, mode meshconfig.MTLSMode) *meshconfig.Snapshot {
	return &meshconfig.Snapshot{
		Version:  "test-1",
		MTLSMode: mode,
		Outbound: meshconfig.Outbound{Services: []meshconfig.Service{{
			Name: "backend", Namespace: "shop", Addresses: []string{vip.Addr().String()},
			Ports: []meshconfig.ServicePort{{
				Port: vip.Port(), Protocol: proto,
				DefaultBackends: []meshconfig.Backend{{Name: "backend", Namespace: "shop", Weight: 1, Endpoints: []meshconfig.Endpoint{ep}}},
			}},
		}}},
		Inbound: meshconfig.Inbound{Ports: []meshconfig.InboundPort{{Port: 1, Name: "unused"}}},
	}
}

// path is a chain of proxies in front of an application.
type path struct {
	// addr is where the client application connects.
	addr string
	// client and server are the proxies (server is nil for one hop).
	client, server *Proxy
	pki            *pki
	serverFiles    testpki.Files
	serverDir      string
	clientFiles    testpki.Files
	clientDir      string
}

type pathOpts struct {
	proto  meshconfig.Protocol
	mesh   string
	opaque []uint16
	detect time.Duration
	// fwd is the client proxy's forwarder factory (DefaultForwarder when nil).
	fwd ForwarderFactory
	// serverAccess is the server proxy's access log (two hops).
	serverAccess *slog.Logger
	// tcpIdle is every proxy's TCPIdleTimeout.
	tcpIdle time.Duration
}

// oneHop: client app → proxy (outbound, static) → app, plaintext.
func oneHop(t *testing.T, app string, o pathOpts) *path {
	p := startProxy(t, Config{
		Static: []Static{{Listen: "127.0.0.1:0", Dst: vip}}, OpaquePorts: o.opaque, DetectTimeout: o.detect, Forwarders: o.fwd,
		TCPIdleTimeout: o.tcpIdle,
	}, snapshot(meshconfig.Endpoint{Address: app}, o.proto, ""))
	return &path{addr: p.Addr("127.0.0.1:0"), client: p}
}

// twoHop: client app → client proxy → mTLS → server proxy (inbound) → app.
func twoHop(t *testing.T, app string, o pathOpts) *path {
	k := newPKI(t)
	ss, sf, sdir := k.source(t, serverID)
	cs, cf, cdir := k.source(t, clientID)
	srv := startProxy(t, Config{
		InboundAddr: "127.0.0.1:0", InboundTarget: app, Identity: ss, OpaquePorts: o.opaque, DetectTimeout: o.detect,
		AccessLog: o.serverAccess, TCPIdleTimeout: o.tcpIdle,
	}, snapshot(meshconfig.Endpoint{Address: "127.0.0.1:9"}, "", meshconfig.MTLSStrict))
	cl := startProxy(t, Config{
		Static: []Static{{Listen: "127.0.0.1:0", Dst: vip}}, Identity: cs, Mesh: meshProto(o.mesh),
		OpaquePorts: o.opaque, DetectTimeout: o.detect, Forwarders: o.fwd, TCPIdleTimeout: o.tcpIdle,
	}, snapshot(meshconfig.Endpoint{Address: srv.Addr("inbound"), Identity: serverID}, o.proto, ""))
	return &path{addr: cl.Addr("127.0.0.1:0"), client: cl, server: srv, pki: k,
		serverFiles: sf, serverDir: sdir, clientFiles: cf, clientDir: cdir}
}

func meshProto(s string) upstream.MeshProtocol { return upstream.MeshProtocol(s) }

// serve runs h on a fresh loopback listener with HTTP/1.1 and h2c.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	s := &http.Server{Handler: h, Protocols: protos}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

func hops(t *testing.T, app string, o pathOpts) map[string]*path {
	return map[string]*path{"one hop": oneHop(t, app, o), "two hops mTLS": twoHop(t, app, o)}
}

// h1Client and h2cClient talk to the proxy's static listener as an app would.
func h1Client() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 30 * time.Second}
}

func h2cClient() *http.Client {
	protos := new(http.Protocols)
	protos.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: protos}, Timeout: 30 * time.Second}
}

// samplePeakHeap reports the largest live heap seen until stop closes.
func samplePeakHeap(stop <-chan struct{}, peak chan<- uint64) {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var max uint64
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		metrics.Read(s)
		if v := s[0].Value.Uint64(); v > max {
			max = v
		}
		select {
		case <-stop:
			peak <- max
			return
		case <-t.C:
		}
	}
}

func readFile(p string) ([]byte, error)  { return os.ReadFile(p) }
func writeFile(p string, b []byte) error { return os.WriteFile(p, b, 0o600) }
