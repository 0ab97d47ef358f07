package cpclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

const (
	testTD  = "cluster.local"
	testNS  = "shop"
	testSA  = "frontend"
	testPod = "frontend-7d9f-abcde"
	testID  = "spiffe://cluster.local/ns/shop/sa/frontend"
	cpHost  = "localhost"
)

var serial atomic.Int64

// ca is a test certificate authority.
type ca struct {
	cert  *x509.Certificate
	key   *ecdsa.PrivateKey
	chain []*x509.Certificate // up to, not including, the root
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sign(t testing.TB, tmpl, parent *x509.Certificate, pub any, key *ecdsa.PrivateKey) *x509.Certificate {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newRoot(t testing.TB, name string) *ca {
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(1000 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	return &ca{cert: sign(t, tmpl, tmpl, &key.PublicKey, key), key: key}
}

func (c *ca) intermediate(t testing.TB, name string) *ca {
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(900 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	cert := sign(t, tmpl, c.cert, &key.PublicKey, c.key)
	return &ca{cert: cert, key: key, chain: append([]*x509.Certificate{cert}, c.chain...)}
}

// serving issues the control plane's serving certificate for host.
func (c *ca) serving(t testing.TB, host string) tls.Certificate {
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(100 * time.Hour),
		DNSNames: []string{host}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leaf := sign(t, tmpl, c.cert, &key.PublicKey, c.key)
	out := tls.Certificate{PrivateKey: key, Leaf: leaf, Certificate: [][]byte{leaf.Raw}}
	for _, ic := range c.chain {
		out.Certificate = append(out.Certificate, ic.Raw)
	}
	return out
}

func pemOf(cas ...*ca) []byte {
	var b []byte
	for _, c := range cas {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw})...)
	}
	return b
}

// issued is one certificate the test control plane signed.
type issued struct {
	serial   string
	token    string
	at       time.Time // on the server's clock
	notAfter time.Time
	issuer   string
}

// testCP is an in-process control plane: Identity signs CSRs with a test
// CA, Config streams whatever the test publishes and records Hellos and
// Acks.
type testCP struct {
	meshapiv1.UnimplementedIdentityServer
	meshapiv1.UnimplementedConfigServer
	t *testing.T

	mu          sync.Mutex
	issuer      *ca
	bundle      []byte // returned by Certify
	serving     tls.Certificate
	clientRoots *x509.CertPool
	ttl         time.Duration
	now         func() time.Time
	failNext    int
	certifies   int
	issued      []issued
	hellos      []*meshapiv1.Hello
	current     *meshapiv1.ConfigResponse
	changed     chan struct{}
	acks        chan *meshapiv1.Ack

	addr string
	srv  *grpc.Server
}

func newTestCP(t *testing.T, issuer *ca, serving tls.Certificate, roots ...*ca) *testCP {
	cp := &testCP{
		t: t, issuer: issuer, serving: serving, bundle: pemOf(roots...),
		clientRoots: x509.NewCertPool(), ttl: 24 * time.Hour, now: time.Now,
		changed: make(chan struct{}), acks: make(chan *meshapiv1.Ack, 100),
	}
	for _, r := range roots {
		cp.clientRoots.AddCert(r.cert)
	}
	cp.start("127.0.0.1:0")
	t.Cleanup(cp.stop)
	return cp
}

// start serves on addr (the previous address after a stop, as a restarted
// control plane behind the same Service would).
func (cp *testCP) start(addr string) {
	t := cp.t
	var ln net.Listener
	var err error
	// The port was just released by stop; a rebind can race the kernel.
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{cp.serving},
				ClientAuth:   tls.VerifyClientCertIfGiven,
				ClientCAs:    cp.clientRoots,
				NextProtos:   []string{"h2"},
			}, nil
		},
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)))
	meshapiv1.RegisterIdentityServer(srv, cp)
	meshapiv1.RegisterConfigServer(srv, cp)
	go srv.Serve(ln)
	cp.mu.Lock()
	cp.srv = srv
	cp.addr = ln.Addr().String()
	cp.mu.Unlock()
}

func (cp *testCP) stop() {
	cp.mu.Lock()
	srv := cp.srv
	cp.mu.Unlock()
	srv.Stop()
}

func (cp *testCP) restart() {
	cp.stop()
	cp.start(cp.addr)
}

// dialAddr is what the proxy is told: a name, checked against the serving
// certificate, that resolves to loopback only.
func (cp *testCP) dialAddr() string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	_, port, _ := net.SplitHostPort(cp.addr)
	return net.JoinHostPort(cpHost, port)
}

// publish makes resp the snapshot every stream sends next.
func (cp *testCP) publish(resp *meshapiv1.ConfigResponse) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.current = resp
	close(cp.changed)
	cp.changed = make(chan struct{})
}

func (cp *testCP) Certify(ctx context.Context, req *meshapiv1.CertifyRequest) (*meshapiv1.CertifyResponse, error) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.certifies++
	if cp.failNext > 0 {
		cp.failNext--
		return nil, status.Error(codes.Unavailable, "test: issuer not loaded")
	}
	if req.GetToken() == "" {
		return nil, status.Error(codes.Unauthenticated, "no token")
	}
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr signature: %v", err)
	}
	if k, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		return nil, status.Error(codes.InvalidArgument, "not a P-256 key")
	}
	if len(csr.URIs) != 1 || csr.URIs[0].String() != testID || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 {
		return nil, status.Errorf(codes.PermissionDenied, "csr SANs %v", csr.URIs)
	}
	now := cp.now()
	u, _ := url.Parse(testID)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		// Real time for NotBefore: the proxy verifies with the real clock
		// even when the test drives renewals with a fake one.
		NotBefore: time.Now().Add(-time.Minute), NotAfter: now.Add(cp.ttl),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leaf := sign(cp.t, tmpl, cp.issuer.cert, csr.PublicKey, cp.issuer.key)
	chain := [][]byte{leaf.Raw}
	for _, ic := range cp.issuer.chain {
		chain = append(chain, ic.Raw)
	}
	cp.issued = append(cp.issued, issued{serial: leaf.SerialNumber.String(), token: req.GetToken(), at: now, notAfter: leaf.NotAfter, issuer: cp.issuer.cert.Subject.CommonName})
	return &meshapiv1.CertifyResponse{CertChain: chain, TrustBundle: cp.bundle, SpiffeId: testID, NotAfter: leaf.NotAfter.Unix()}, nil
}

func (cp *testCP) Stream(stream meshapiv1.Config_StreamServer) error {
	ctx := stream.Context()
	p, _ := peer.FromContext(ctx)
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 {
		return status.Error(codes.Unauthenticated, "no verified workload certificate")
	}
	id, err := x509svid.IDFromCert(ti.State.VerifiedChains[0][0])
	if err != nil || id.String() != testID {
		return status.Errorf(codes.PermissionDenied, "identity %v", id)
	}
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := req.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "first message must be a Hello")
	}
	cp.mu.Lock()
	cp.hellos = append(cp.hellos, hello)
	cp.mu.Unlock()
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if a := req.GetAck(); a != nil {
				cp.acks <- a
			}
		}
	}()
	sent := hello.GetLastVersion()
	for {
		cp.mu.Lock()
		cur, changed := cp.current, cp.changed
		cp.mu.Unlock()
		if cur != nil && cur.GetVersion() != sent {
			if err := stream.Send(cur); err != nil {
				return err
			}
			sent = cur.GetVersion()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			return err
		case <-changed:
		}
	}
}

func (cp *testCP) helloList() []*meshapiv1.Hello {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]*meshapiv1.Hello(nil), cp.hellos...)
}

func (cp *testCP) issuedList() []issued {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]issued(nil), cp.issued...)
}

// nextAck waits for the proxy's next Ack.
func (cp *testCP) nextAck(t *testing.T) *meshapiv1.Ack {
	t.Helper()
	select {
	case a := <-cp.acks:
		return a
	case <-time.After(30 * time.Second):
		t.Fatal("no Ack from the proxy")
		return nil
	}
}

// snapshotResp is a valid response for version.
func snapshotResp(t *testing.T, version string, bundle []byte) *meshapiv1.ConfigResponse {
	t.Helper()
	b, err := meshconfig.Encode(&meshconfig.Snapshot{
		Version: version, Identity: testID, TrustDomain: testTD, MTLSMode: meshconfig.MTLSStrict,
		Inbound: meshconfig.Inbound{Ports: []meshconfig.InboundPort{{Port: 8080, Name: "http"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &meshapiv1.ConfigResponse{Version: version, Snapshot: b, TrustBundle: bundle}
}

// eventually polls cond until it holds. It bounds a wait so that a broken
// client fails the test instead of hanging it; it asserts nothing about
// how long things take.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func writeToken(t *testing.T, path, token string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func tokenFile(t *testing.T, token string) string {
	p := filepath.Join(t.TempDir(), "token")
	writeToken(t, p, token)
	return p
}

// metric sums the samples of a family whose labels include want.
func metric(t *testing.T, reg *prometheus.Registry, name string, want ...string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(want); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == want[i] && l.GetValue() == want[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// fakeClock drives renewals and retries in TestRenewal.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) After(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- f.now
		return ch
	}
	f.waiters = append(f.waiters, fakeWaiter{at: f.now.Add(d), ch: ch})
	return ch
}

// set moves the clock to at and fires every timer due.
func (f *fakeClock) set(at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = at
	kept := f.waiters[:0]
	for _, w := range f.waiters {
		if !w.at.After(at) {
			w.ch <- at
		} else {
			kept = append(kept, w)
		}
	}
	f.waiters = kept
}

// pending returns the earliest timer, if any.
func (f *fakeClock) pending() (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.waiters) == 0 {
		return time.Time{}, false
	}
	at := f.waiters[0].at
	for _, w := range f.waiters[1:] {
		if w.at.Before(at) {
			at = w.at
		}
	}
	return at, true
}

func newSerial() *big.Int { return big.NewInt(serial.Add(1)) }

type nopApplier struct{}

func (nopApplier) Apply(*meshconfig.Snapshot) error { return nil }
