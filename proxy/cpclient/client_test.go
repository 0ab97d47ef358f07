package cpclient

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
	"github.com/weftmesh/weft/proxy/identity"
	"github.com/weftmesh/weft/proxy/metrics"
	"github.com/weftmesh/weft/proxy/sidecar"
)

// harness is a real sidecar.Proxy (admin listener only) fed by a Client
// that talks to a testCP over real TLS on loopback.
type harness struct {
	root, iss *ca
	cp        *testCP
	src       *identity.Source
	proxy     *sidecar.Proxy
	reg       *prometheus.Registry
	client    *Client
	tokenPath string
	cancel    context.CancelFunc
	done      chan struct{}
}

type harnessOpts struct {
	serving *tls.Certificate // default: issued by iss for cpHost
	clock   Clock
	now     func() time.Time
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	h := &harness{root: newRoot(t, "root-1"), reg: prometheus.NewRegistry()}
	h.iss = h.root.intermediate(t, "issuer-1")
	serving := h.iss.serving(t, cpHost)
	if o.serving != nil {
		serving = *o.serving
	}
	h.cp = newTestCP(t, h.iss, serving, h.root)
	if o.now != nil {
		h.cp.now = o.now
	}
	h.src = identity.NewMemorySource(testLog(t))
	p, err := sidecar.New(sidecar.Config{
		AdminAddr: "127.0.0.1:0", Identity: h.src, RequireSnapshot: true,
		Registry: h.reg, Log: testLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	h.proxy = p
	h.tokenPath = tokenFile(t, "token-1")
	h.client, err = New(Config{
		Addr: h.cp.dialAddr(), TrustDomain: testTD, PodNamespace: testNS, ServiceAccount: testSA,
		PodName: testPod, TokenPath: h.tokenPath, TrustAnchors: pemOf(h.root),
		ProxyVersion: "v9.9.9-test", Identity: h.src, Proxy: p,
		Metrics: metrics.NewControlPlane(h.reg), Log: testLog(t), Clock: o.clock,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		if err := h.client.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-h.done
	})
}

func (h *harness) readyStatus(t *testing.T) int {
	t.Helper()
	res, err := http.Get("http://" + h.proxy.Addr("admin") + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

func (h *harness) serial() string {
	if m := h.src.Current(); m != nil {
		return m.Cert.Leaf.SerialNumber.String()
	}
	return ""
}

func TestFirstCertificateAndSnapshotMakeReady(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	if h.proxy.Ready() || h.readyStatus(t) != http.StatusServiceUnavailable {
		t.Fatal("ready before any certificate or snapshot")
	}
	h.run(t)
	eventually(t, "first certificate", func() bool { return h.src.Current() != nil })
	m := h.src.Current()
	if m.ID.String() != testID {
		t.Errorf("certificate for %s, want %s", m.ID, testID)
	}
	if k, ok := m.Cert.PrivateKey.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("key is %T, want ECDSA P-256", m.Cert.PrivateKey)
	}
	if got := h.cp.issuedList(); len(got) != 1 || got[0].token != "token-1" {
		t.Errorf("issued %+v, want one certificate for token-1", got)
	}
	if got := metric(t, h.reg, "weft_identity_cert_expiry_timestamp_seconds"); got != float64(m.Cert.Leaf.NotAfter.Unix()) {
		t.Errorf("expiry metric %v, want %v", got, m.Cert.Leaf.NotAfter.Unix())
	}

	// A certificate alone is not enough: the proxy has no configuration.
	eventually(t, "Hello", func() bool { return len(h.cp.helloList()) == 1 })
	if h.proxy.Ready() || h.readyStatus(t) != http.StatusServiceUnavailable {
		t.Fatal("ready with a certificate but no snapshot")
	}
	hello := h.cp.helloList()[0]
	if hello.GetPodName() != testPod || hello.GetPodNamespace() != testNS || hello.GetProxyVersion() != "v9.9.9-test" || hello.GetLastVersion() != "" {
		t.Errorf("Hello = %v", hello)
	}

	h.cp.publish(snapshotResp(t, "v1", nil))
	if a := h.cp.nextAck(t); a.GetVersion() != "v1" || a.GetError() != "" {
		t.Fatalf("ack = %v, want v1 applied", a)
	}
	if !h.proxy.Ready() || h.readyStatus(t) != http.StatusOK {
		t.Fatal("not ready with a certificate and a snapshot")
	}
	if v := h.proxy.Snapshot().Version; v != "v1" {
		t.Errorf("proxy serves %q, want v1", v)
	}
	if got := metric(t, h.reg, "weft_control_plane_snapshots_total", "result", "applied"); got != 1 {
		t.Errorf("applied = %v, want 1", got)
	}
	if got := metric(t, h.reg, "weft_control_plane_connected"); got != 1 {
		t.Errorf("connected = %v, want 1", got)
	}
}

func TestSnapshotsAppliedAndRejected(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.cp.publish(snapshotResp(t, "v1", nil))
	h.run(t)
	if a := h.cp.nextAck(t); a.GetVersion() != "v1" || a.GetError() != "" {
		t.Fatalf("ack = %v, want v1 applied", a)
	}

	withSnapshot := func(version, body string) *meshapiv1.ConfigResponse {
		return &meshapiv1.ConfigResponse{Version: version, Snapshot: []byte(body)}
	}
	badMode := snapshotResp(t, "bad-mode", nil)
	badMode.Snapshot = []byte(strings.Replace(string(badMode.Snapshot), `"Strict"`, `"Sometimes"`, 1))
	otherID := snapshotResp(t, "other-id", nil)
	otherID.Snapshot = []byte(strings.Replace(string(otherID.Snapshot), "sa/frontend", "sa/backend", 1))
	mismatch := snapshotResp(t, "v8", nil)
	mismatch.Version = "v9"
	badBundle := snapshotResp(t, "bad-bundle", []byte("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"))
	for _, tc := range []struct {
		name string
		resp *meshapiv1.ConfigResponse
		want string
	}{
		{"not JSON", withSnapshot("bad-json", "{"), "decoding snapshot"},
		{"unknown field", withSnapshot("bad-field", `{"version":"bad-field","outbound":{},"inbound":{},"bogus":1}`), "unknown field"},
		{"invalid value", badMode, "mtlsMode"},
		{"built for another proxy", otherID, "sa/backend"},
		{"version mismatch", mismatch, "v8"},
		{"bad trust bundle", badBundle, "trust bundle"},
		{"no version", withSnapshot("", `{}`), "no version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.cp.publish(tc.resp)
			a := h.cp.nextAck(t)
			if a.GetVersion() != tc.resp.GetVersion() || !strings.Contains(a.GetError(), tc.want) {
				t.Fatalf("ack = %v, want a rejection of %q mentioning %q", a, tc.resp.GetVersion(), tc.want)
			}
			if v := h.proxy.Snapshot().Version; v != "v1" {
				t.Errorf("proxy serves %q after a rejected snapshot, want v1", v)
			}
			if !h.proxy.Ready() {
				t.Error("a rejected snapshot made the proxy unready")
			}
		})
	}
	if n := len(h.src.Current().Bundle.X509Authorities()); n != 1 {
		t.Errorf("bundle has %d roots after a rejected bundle, want 1", n)
	}
	if got := metric(t, h.reg, "weft_control_plane_snapshots_total", "result", "rejected"); got != 7 {
		t.Errorf("rejected = %v, want 7", got)
	}

	h.cp.publish(snapshotResp(t, "v2", nil))
	if a := h.cp.nextAck(t); a.GetVersion() != "v2" || a.GetError() != "" {
		t.Fatalf("ack = %v, want v2 applied", a)
	}
	if v := h.proxy.Snapshot().Version; v != "v2" {
		t.Errorf("proxy serves %q, want v2", v)
	}
}

func TestReconnectsAndConverges(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.cp.publish(snapshotResp(t, "v1", nil))
	h.run(t)
	h.cp.nextAck(t)
	h.cp.publish(snapshotResp(t, "v2", nil))
	if a := h.cp.nextAck(t); a.GetVersion() != "v2" || a.GetError() != "" {
		t.Fatalf("ack = %v, want v2 applied", a)
	}

	h.cp.stop()
	eventually(t, "stream seen down", func() bool { return metric(t, h.reg, "weft_control_plane_connected") == 0 })
	if !h.proxy.Ready() || h.proxy.Snapshot().Version != "v2" {
		t.Fatalf("while the control plane is down: ready=%v version=%q, want ready on v2", h.proxy.Ready(), h.proxy.Snapshot().Version)
	}
	h.cp.publish(snapshotResp(t, "v3", pemOf(h.root)))
	h.cp.start(h.cp.addr)
	if a := h.cp.nextAck(t); a.GetVersion() != "v3" || a.GetError() != "" {
		t.Fatalf("ack = %v, want v3 applied", a)
	}
	hellos := h.cp.helloList()
	if last := hellos[len(hellos)-1].GetLastVersion(); last != "v2" {
		t.Errorf("Hello after reconnecting says last_version %q, want v2", last)
	}
	if sum := hellos[len(hellos)-1].GetTrustBundleSha256(); sum != nil {
		t.Errorf("Hello before any bundle came on the stream carries bundle hash %x", sum)
	}
	if v := h.proxy.Snapshot().Version; v != "v3" {
		t.Errorf("proxy serves %q, want v3", v)
	}

	// A restart with nothing new: the proxy says what it holds and keeps it.
	n := len(hellos)
	h.cp.restart()
	eventually(t, "Hello after the second restart", func() bool { return len(h.cp.helloList()) > n })
	hellos = h.cp.helloList()
	if last := hellos[len(hellos)-1].GetLastVersion(); last != "v3" {
		t.Errorf("last_version %q, want v3", last)
	}
	// It also says which bundle it holds, so that one changed while it was
	// away is sent again although its snapshot is current.
	if sum, want := hellos[len(hellos)-1].GetTrustBundleSha256(), sha256.Sum256(pemOf(h.root)); !bytes.Equal(sum, want[:]) {
		t.Errorf("Hello's trust bundle hash = %x, want the hash of the bundle of v3 %x", sum, want)
	}
	if got := metric(t, h.reg, "weft_control_plane_reconnects_total"); got < 2 {
		t.Errorf("reconnects = %v, want at least 2", got)
	}
	if got := len(h.cp.issuedList()); got != 1 {
		t.Errorf("%d certificates issued, want 1: reconnecting needs no new one", got)
	}
}

func TestRenewalBeforeExpiry(t *testing.T) {
	clk := &fakeClock{now: time.Now()}
	h := newHarness(t, harnessOpts{clock: clk, now: clk.Now})
	h.cp.publish(snapshotResp(t, "v1", nil))
	h.run(t)
	h.cp.nextAck(t) // the stream is up: the only timer left is the renewal
	first := h.src.Current().Cert.Leaf

	at, ok := clk.pending()
	if !ok {
		t.Fatal("no renewal scheduled")
	}
	life := first.NotAfter.Sub(first.NotBefore)
	lo := first.NotBefore.Add(time.Duration(float64(life) * 0.65))
	hi := first.NotBefore.Add(time.Duration(float64(life) * 0.75))
	if at.Before(lo) || at.After(hi) {
		t.Fatalf("renewal at %v, want within [%v, %v] (65-75%% of the lifetime)", at, lo, hi)
	}

	// The kubelet rotated the token; the first attempt fails.
	writeToken(t, h.tokenPath, "token-2")
	h.cp.mu.Lock()
	h.cp.failNext = 1
	h.cp.mu.Unlock()
	clk.set(at)
	eventually(t, "failed renewal", func() bool {
		return metric(t, h.reg, "weft_identity_certify_total", "result", "error") == 1
	})
	if h.serial() != first.SerialNumber.String() || !h.proxy.Ready() {
		t.Fatal("a failed renewal replaced the certificate or made the proxy unready")
	}
	var retry time.Time
	eventually(t, "retry scheduled", func() bool { retry, ok = clk.pending(); return ok })
	if retry.After(at.Add(200 * time.Millisecond)) {
		t.Errorf("retry at %v, more than MaxBackoff after %v", retry, at)
	}
	clk.set(retry)
	eventually(t, "renewed certificate", func() bool { return h.serial() != first.SerialNumber.String() })

	got := h.cp.issuedList()
	if len(got) != 2 {
		t.Fatalf("issued %d certificates, want 2", len(got))
	}
	if got[1].token != "token-2" {
		t.Errorf("renewal sent %q, want the rotated token-2", got[1].token)
	}
	if !got[1].at.Before(first.NotAfter) {
		t.Errorf("renewed at %v, after the first certificate expired at %v", got[1].at, first.NotAfter)
	}
	now := h.src.Current().Cert.Leaf
	if !now.NotAfter.After(first.NotAfter) {
		t.Errorf("new certificate expires %v, not after the old one's %v", now.NotAfter, first.NotAfter)
	}
	if bytesEqual(now.PublicKey, first.PublicKey) {
		t.Error("renewal reused the key")
	}
	if m := metric(t, h.reg, "weft_identity_cert_expiry_timestamp_seconds"); m != float64(now.NotAfter.Unix()) {
		t.Errorf("expiry metric %v, want %v", m, now.NotAfter.Unix())
	}
}

func bytesEqual(a, b any) bool {
	ka, _ := a.(*ecdsa.PublicKey)
	kb, _ := b.(*ecdsa.PublicKey)
	return ka != nil && kb != nil && ka.Equal(kb)
}

func TestUntrustedControlPlaneRefused(t *testing.T) {
	other := newRoot(t, "impostor").intermediate(t, "impostor-issuer")
	for _, tc := range []struct {
		name    string
		serving func(h *ca) tls.Certificate
	}{
		{"unknown root", func(*ca) tls.Certificate { return other.serving(t, cpHost) }},
		{"wrong name", func(iss *ca) tls.Certificate { return iss.serving(t, "weft-controlplane.example") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The serving certificate is swapped in after the harness made
			// the real issuer.
			h := newHarness(t, harnessOpts{})
			h.cp.mu.Lock()
			h.cp.serving = tc.serving(h.iss)
			h.cp.mu.Unlock()
			h.run(t)
			eventually(t, "refused attempts", func() bool {
				h.cp.mu.Lock()
				defer h.cp.mu.Unlock()
				return h.cp.certifies > 0 || metric(t, h.reg, "weft_identity_certify_total", "result", "error") >= 2
			})
			h.cp.mu.Lock()
			n := h.cp.certifies
			h.cp.mu.Unlock()
			if n != 0 {
				t.Errorf("the proxy sent %d certificate requests (and its token) to an untrusted server", n)
			}
			if h.src.Current() != nil || h.proxy.Ready() {
				t.Error("identity installed or ready without a trusted control plane")
			}
		})
	}
}

func TestTrustBundleRotation(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	root2 := newRoot(t, "root-2")
	iss2 := root2.intermediate(t, "issuer-2")
	h.cp.mu.Lock()
	h.cp.clientRoots.AddCert(root2.cert)
	h.cp.mu.Unlock()
	h.cp.publish(snapshotResp(t, "v1", pemOf(h.root)))
	h.run(t)
	if a := h.cp.nextAck(t); a.GetError() != "" {
		t.Fatal(a)
	}
	first := h.serial()

	// Step 1: the new root joins the bundle; peers issued under it verify.
	h.cp.publish(snapshotResp(t, "v2", pemOf(h.root, root2)))
	if a := h.cp.nextAck(t); a.GetVersion() != "v2" || a.GetError() != "" {
		t.Fatalf("ack = %v", a)
	}
	if n := len(h.src.Current().Bundle.X509Authorities()); n != 2 {
		t.Fatalf("bundle has %d roots, want 2", n)
	}
	peer := peerLeaf(t, iss2, "spiffe://cluster.local/ns/shop/sa/backend")
	if _, _, err := x509svid.Verify(peer, h.src.Current().Bundle); err != nil {
		t.Errorf("a peer under the new root does not verify: %v", err)
	}
	if h.serial() != first {
		t.Error("adding a root replaced the certificate")
	}
	if got := metric(t, h.reg, "weft_identity_trust_bundle_updates_total"); got != 1 {
		t.Errorf("bundle updates = %v, want 1", got)
	}

	// Step 2: the control plane signs under the new root and retires the
	// old one; the proxy's certificate no longer chains, so it renews now.
	h.cp.mu.Lock()
	h.cp.issuer, h.cp.bundle = iss2, pemOf(root2)
	h.cp.mu.Unlock()
	h.cp.publish(snapshotResp(t, "v3", pemOf(root2)))
	if a := h.cp.nextAck(t); a.GetVersion() != "v3" || a.GetError() != "" {
		t.Fatalf("ack = %v", a)
	}
	eventually(t, "certificate under the new root", func() bool {
		m := h.src.Current()
		return m.Cert.Leaf.Issuer.CommonName == "issuer-2"
	})
	m := h.src.Current()
	if n := len(m.Bundle.X509Authorities()); n != 1 || !m.Bundle.X509Authorities()[0].Equal(root2.cert) {
		t.Errorf("bundle = %d roots, want root-2 only", n)
	}
	if _, _, err := x509svid.Verify(peerLeaf(t, h.iss, "spiffe://cluster.local/ns/shop/sa/old"), m.Bundle); err == nil {
		t.Error("a peer under the retired root still verifies")
	}
	// The config stream is still usable after the rotation.
	h.cp.publish(snapshotResp(t, "v4", nil))
	if a := h.cp.nextAck(t); a.GetVersion() != "v4" || a.GetError() != "" {
		t.Fatalf("ack = %v", a)
	}
}

// peerLeaf is another workload's SVID chain under iss.
func peerLeaf(t *testing.T, iss *ca, id string) []*x509.Certificate {
	key := newKey(t)
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	return append([]*x509.Certificate{sign(t, tmpl, iss.cert, &key.PublicKey, iss.key)}, iss.chain...)
}

func TestConfigErrors(t *testing.T) {
	_, err := New(Config{Addr: "no-port", TrustDomain: "Not A Domain", TrustAnchors: []byte("junk")})
	if err == nil {
		t.Fatal("New accepted an empty configuration")
	}
	for _, want := range []string{EnvControlPlaneAddr, EnvTrustDomain, EnvPodNamespace, EnvServiceAccount, EnvPodName, EnvTokenPath, EnvTrustAnchors, "identity source", "proxy"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
	env := map[string]string{
		EnvControlPlaneAddr: "weft-controlplane-v1-2-3.weft-system.svc:8090", EnvTrustDomain: testTD,
		EnvPodName: testPod, EnvPodNamespace: testNS, EnvServiceAccount: testSA,
		EnvTokenPath: "/var/run/secrets/weft/token", EnvTrustAnchors: string(pemOf(newRoot(t, "r"))),
	}
	cfg := FromEnv(func(k string) string { return env[k] })
	cfg.Identity, cfg.Proxy = identity.NewMemorySource(nil), nopApplier{}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID() != testID || c.s.serverName != "weft-controlplane-v1-2-3.weft-system.svc" {
		t.Errorf("id %s, server name %s", c.ID(), c.s.serverName)
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		w *= time.Millisecond
		if d := b.next(); d < w/2 || d > w {
			t.Errorf("attempt %d: %v, want within [%v, %v]", i, d, w/2, w)
		}
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("after reset: %v", d)
	}
	nb := time.Unix(0, 0)
	for range 100 {
		at := renewAt(nb, nb.Add(100*time.Hour))
		if at.Before(nb.Add(65*time.Hour)) || at.After(nb.Add(75*time.Hour)) {
			t.Fatalf("renewal at %v, outside 65-75%%", at.Sub(nb))
		}
	}
}

// TestWeftProxyCommand runs the weft-proxy binary as the injector configures
// it (environment only, no files) against the test control plane.
func TestWeftProxyCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the weft-proxy binary")
	}
	bin := filepath.Join(t.TempDir(), "weft-proxy")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/weftmesh/weft/proxy/cmd/weft-proxy").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	root := newRoot(t, "root-1")
	iss := root.intermediate(t, "issuer-1")
	cp := newTestCP(t, iss, iss.serving(t, cpHost), root)
	cp.publish(snapshotResp(t, "v1", nil))
	ports := freePorts(t, 3)
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "run")
	cmd.Env = []string{
		EnvControlPlaneAddr + "=" + cp.dialAddr(), EnvTrustDomain + "=" + testTD,
		EnvPodName + "=" + testPod, EnvPodNamespace + "=" + testNS, EnvServiceAccount + "=" + testSA,
		EnvTokenPath + "=" + tokenFile(t, "token-1"), EnvTrustAnchors + "=" + string(pemOf(root)),
		"WEFT_ADMIN_PORT=" + ports[0], "WEFT_INBOUND_PORT=" + ports[1], "WEFT_OUTBOUND_PORT=" + ports[2],
		"WEFT_LOG_LEVEL=debug",
	}
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if t.Failed() {
			cmd.Process.Kill()
			<-exited
			t.Logf("weft-proxy stderr:\n%s", stderr.String())
		}
	}()
	if a := cp.nextAck(t); a.GetVersion() != "v1" || a.GetError() != "" {
		t.Fatalf("ack = %v", a)
	}
	adminURL := "http://127.0.0.1:" + ports[0]
	eventually(t, "weft-proxy ready", func() bool {
		res, err := http.Get(adminURL + "/ready")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
	res, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{"weft_control_plane_connected 1", `weft_control_plane_snapshots_total{result="applied"} 1`, "weft_identity_cert_expiry_timestamp_seconds"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if h := cp.helloList(); len(h) != 1 || h[0].GetPodName() != testPod || h[0].GetProxyVersion() != Version {
		t.Errorf("hellos = %v", h)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("weft-proxy exited with %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("weft-proxy did not exit on SIGTERM")
	}
}

// freePorts returns loopback ports free at the time of the call.
func freePorts(t *testing.T, n int) []string {
	var out []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		_, p, _ := net.SplitHostPort(ln.Addr().String())
		out = append(out, p)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}
