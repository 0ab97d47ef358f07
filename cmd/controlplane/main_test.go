package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/configserver/fakeproxy"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/testpki"
	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Options{GatewayAPI: true}, func(e *testenv.Env) { env = e }))
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{args: []string{"--mesh-name=m", "--namespace=weft-system", "--revision=1"}},
		{args: []string{"--namespace=weft-system", "--revision=1"}, err: "--mesh-name"},
		{args: []string{"--mesh-name=m", "--namespace=weft-system", "--revision=1", "--trust-domain=Not A Domain"}, err: "--trust-domain"},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		o, err := parseFlags(fs, tc.args)
		if tc.err == "" && (err != nil || o.grpcAddr != ":8090" || o.issuerSecret != "weft-issuer" || o.trustDomain != "cluster.local") {
			t.Errorf("%v: %+v, %v", tc.args, o, err)
		}
		if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: error %v, want one naming %s", tc.args, err, tc.err)
		}
	}
}

// issuerSecret mints root → issuer and returns the Secret the operator
// would write, and the root.
func issuerSecret(t *testing.T, ns string) (*corev1.Secret, *x509.Certificate) {
	t.Helper()
	ch, err := testpki.NewChain("root", "issuer")
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "weft-issuer"},
		Data:       map[string][]byte{"tls.crt": ch.IssuerPEM, "tls.key": ch.IssuerKeyPEM, "ca.crt": ch.BundlePEM},
	}, ch.Root
}

// TestControlPlaneServesIdentityAndConfig runs the whole command against the
// API server: a proxy gets its certificate from Identity.Certify with its
// ServiceAccount token, then opens the Config stream with it.
func TestControlPlaneServesIdentityAndConfig(t *testing.T) {
	ctx := context.Background()
	kube := kubernetes.NewForConfigOrDie(env.Config)
	for _, ns := range []string{"weft-system", "app"} {
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	sec, root := issuerSecret(t, "weft-system")
	if err := env.Client.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	mcp := &meshv1alpha1.MeshControlPlane{ObjectMeta: metav1.ObjectMeta{Name: "mesh"}, Spec: meshv1alpha1.MeshControlPlaneSpec{Version: "v0.1.0"}}
	mcp.Spec.MTLS.Mode = meshv1alpha1.MTLSPermissive
	mcp.Spec.Identity.BuiltInCA = &meshv1alpha1.BuiltInCASpec{}
	mcp.Spec.Identity.LeafLifetime = metav1.Duration{Duration: 2 * time.Hour}
	if err := env.Client.Create(ctx, mcp); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web"}}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "web-1", Labels: map[string]string{meshv1alpha1.LabelRevision: "r1"}},
		Spec:       corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}

	addrc := make(chan net.Addr, 1)
	o := options{
		meshName: "mesh", namespace: "weft-system", revision: "r1", version: "test", trustDomain: "cluster.local",
		issuerSecret: "weft-issuer", grpcAddr: "127.0.0.1:0", healthAddr: "0", metricsAddr: "0", webhookAddr: "0", replica: "weft-controlplane-r1-x", restartable: true,
		listening: func(a net.Addr) { addrc <- a },
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, o, env.Config, testr.New(t)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("run ended early: %v", err)
	}

	pool := x509.NewCertPool()
	pool.AddCert(root)
	serverTLS := &tls.Config{RootCAs: pool, ServerName: "weft-controlplane-r1.weft-system.svc", MinVersion: tls.VersionTLS13}
	conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(credentials.NewTLS(serverTLS)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	tr, err := kube.CoreV1().ServiceAccounts("app").CreateToken(ctx, "web", &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{"weft"}, ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := "spiffe://cluster.local/ns/app/sa/web"
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	// The issuer Secret is loaded asynchronously; until then the gRPC port
	// refuses handshakes, so retry.
	var resp *meshapiv1.CertifyResponse
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err = meshapiv1.NewIdentityClient(conn).Certify(ctx, &meshapiv1.CertifyRequest{Token: tr.Status.Token, Csr: csr})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Certify: %v", err)
	}
	var certs []*x509.Certificate
	for _, der := range resp.GetCertChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	got, _, err := x509svid.Verify(certs, x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("cluster.local"), []*x509.Certificate{root}))
	if err != nil || got.String() != id {
		t.Fatalf("x509svid.Verify: %v, %v", got, err)
	}
	// spec.identity.leafLifetime reaches the identity service (the
	// MeshControlPlane is read asynchronously too).
	for life := certs[0].NotAfter.Sub(certs[0].NotBefore); life > 3*time.Hour; {
		if time.Now().After(deadline) {
			t.Fatalf("leaves live %s, want the MeshControlPlane's 2h", life)
		}
		time.Sleep(50 * time.Millisecond)
		r, err := meshapiv1.NewIdentityClient(conn).Certify(ctx, &meshapiv1.CertifyRequest{Token: tr.Status.Token, Csr: csr})
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(r.GetCertChain()[0])
		if err != nil {
			t.Fatal(err)
		}
		life = leaf.NotAfter.Sub(leaf.NotBefore)
	}

	proxyTLS := serverTLS.Clone()
	proxyTLS.Certificates = []tls.Certificate{{Certificate: resp.GetCertChain(), PrivateKey: key}}
	c := &fakeproxy.Client{Addr: addr.String(), TLS: proxyTLS, Namespace: "app", Pod: "web-1", ProxyVersion: "test", KeepSnapshot: true}
	defer c.Close()
	streamCtx, stop := context.WithCancel(ctx)
	finished := make(chan struct{})
	go func() { defer close(finished); c.Run(streamCtx) }()
	deadline = time.Now().Add(30 * time.Second)
	for c.Last() == "" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	<-finished
	if c.Last() == "" {
		t.Fatalf("no snapshot over the Config stream: %v", c.Err())
	}
	if !strings.Contains(string(c.TrustBundle()), "BEGIN CERTIFICATE") {
		t.Errorf("the snapshot came without the trust bundle")
	}
	var snap struct {
		Identity string `json:"identity"`
		MTLSMode string `json:"mtlsMode"`
	}
	if err := json.Unmarshal(c.Snapshot(), &snap); err != nil || snap.Identity != id || snap.MTLSMode != "Permissive" {
		t.Errorf("snapshot identity %q, mtlsMode %q (%v); want %s and the MeshControlPlane's Permissive", snap.Identity, snap.MTLSMode, err, id)
	}
}
