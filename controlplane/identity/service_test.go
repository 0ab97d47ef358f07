package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/internal/testenv"
	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
)

var (
	env  *testenv.Env
	kube kubernetes.Interface
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Options{}, func(e *testenv.Env) {
		env = e
		kube = kubernetes.NewForConfigOrDie(e.Config)
	}))
}

func mustTD(t *testing.T, s string) spiffeid.TrustDomain {
	t.Helper()
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return td
}

// serviceAccount creates ns/name and returns a projected-style token for it.
func serviceAccount(t *testing.T, ns, name string, audiences ...string) (string, *corev1.ServiceAccount) {
	t.Helper()
	ctx := context.Background()
	_, _ = kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	sa, err := kube.CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		sa, err = kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token, sa
}

func newService(t *testing.T, iss *Issuer) *Service {
	t.Helper()
	store := &Store{}
	store.Set(iss)
	return &Service{TrustDomain: mustTD(t, "cluster.local"), Auth: TokenReviewer{Client: kube}, Issuers: store}
}

func TestCertifyIssuesAVerifiableSVID(t *testing.T) {
	ca := newRoot(t, 48*time.Hour)
	svc := newService(t, ca.mustIssuer(t, 24*time.Hour))
	token, _ := serviceAccount(t, "shop", "web", Audience)

	resp, err := svc.Certify(context.Background(), &meshapiv1.CertifyRequest{
		Token: token, Csr: csrFor(t, mustKey(t), nil, "spiffe://cluster.local/ns/shop/sa/web"),
	})
	if err != nil {
		t.Fatalf("Certify: %v", err)
	}
	verifyWithGoSPIFFE(t, resp, "spiffe://cluster.local/ns/shop/sa/web")
}

// verifyWithGoSPIFFE checks a response the way a peer proxy will: go-spiffe's
// X.509-SVID verification against the served trust bundle.
func verifyWithGoSPIFFE(t *testing.T, resp *meshapiv1.CertifyResponse, wantID string) {
	t.Helper()
	var certs []*x509.Certificate
	for _, der := range resp.CertChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	td := mustTD(t, "cluster.local")
	b, err := x509bundle.Parse(td, resp.TrustBundle)
	if err != nil {
		t.Fatalf("trust bundle: %v", err)
	}
	id, _, err := x509svid.Verify(certs, b)
	if err != nil {
		t.Fatalf("go-spiffe refuses the issued SVID: %v", err)
	}
	if id.String() != wantID || resp.SpiffeId != wantID {
		t.Fatalf("certified %s (response says %s), want %s", id, resp.SpiffeId, wantID)
	}
	if certs[0].IsCA {
		t.Fatal("a workload leaf must not be a CA")
	}
}

func TestCertifyRefuses(t *testing.T) {
	ca := newRoot(t, 48*time.Hour)
	svc := newService(t, ca.mustIssuer(t, 24*time.Hour))
	good, _ := serviceAccount(t, "shop", "web", Audience)
	otherAud, _ := serviceAccount(t, "shop", "web", "vault")
	defaultAud, _ := serviceAccount(t, "shop", "web")
	expired := craftedToken(t, "shop", "web", time.Now().Add(-time.Hour))
	// The same crafted token, still valid, is accepted: so the expired one is
	// refused for its expiry and not for how the test made it.
	if _, err := svc.Certify(context.Background(), &meshapiv1.CertifyRequest{
		Token: craftedToken(t, "shop", "web", time.Now().Add(time.Hour)),
		Csr:   csrFor(t, mustKey(t), nil, "spiffe://cluster.local/ns/shop/sa/web"),
	}); err != nil {
		t.Fatalf("a valid hand-made token was refused, so the expiry case proves nothing: %v", err)
	}
	id := "spiffe://cluster.local/ns/shop/sa/web"

	cases := []struct {
		name  string
		token string
		csr   []byte
		code  codes.Code
		msg   string
	}{
		{"no token", "", csrFor(t, mustKey(t), nil, id), codes.Unauthenticated, "no ServiceAccount token"},
		{"garbage token", "not.a.jwt", csrFor(t, mustKey(t), nil, id), codes.Unauthenticated, "token refused"},
		{"token for another audience", otherAud, csrFor(t, mustKey(t), nil, id), codes.Unauthenticated, "token refused"},
		{"token for the API server's audience", defaultAud, csrFor(t, mustKey(t), nil, id), codes.Unauthenticated, "token refused"},
		{"expired token", expired, csrFor(t, mustKey(t), nil, id), codes.Unauthenticated, "token refused"},
		{"garbage csr", good, []byte("hello"), codes.InvalidArgument, "not a PKCS#10 request"},
		{"empty csr", good, nil, codes.InvalidArgument, "csr must be a DER PKCS#10 request"},
		{"csr for another identity", good, csrFor(t, mustKey(t), nil, "spiffe://cluster.local/ns/kube-system/sa/admin"),
			codes.PermissionDenied, "asks for spiffe://cluster.local/ns/kube-system/sa/admin but the token proves spiffe://cluster.local/ns/shop/sa/web"},
		{"csr for another trust domain", good, csrFor(t, mustKey(t), nil, "spiffe://evil.example/ns/shop/sa/web"),
			codes.PermissionDenied, "but the token proves"},
		{"csr with two identities", good, csrFor(t, mustKey(t), nil, id, "spiffe://cluster.local/ns/shop/sa/db"),
			codes.InvalidArgument, "exactly one URI SAN"},
		{"csr without identity", good, csrFor(t, mustKey(t), nil), codes.InvalidArgument, "exactly one URI SAN"},
		{"csr with a DNS name", good, csrFor(t, mustKey(t), []string{"kubernetes.default.svc"}, id), codes.InvalidArgument, "only a SPIFFE URI SAN"},
		{"RSA key", good, csrFor(t, rsaKey(t), nil, id), codes.InvalidArgument, "unsupported key type RSA: only ECDSA P-256"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := svc.Certify(context.Background(), &meshapiv1.CertifyRequest{Token: tc.token, Csr: tc.csr})
			st, _ := status.FromError(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("got %v %q, want %v containing %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
		})
	}
}

// craftedToken signs, with the test API server's own ServiceAccount key, a
// token with the expiry asked for: the TokenRequest API cannot mint an
// expired one.
func craftedToken(t *testing.T, ns, name string, exp time.Time) string {
	t.Helper()
	_, sa := serviceAccount(t, ns, name, Audience)
	api := env.Environment().ControlPlane.APIServer
	keyPEM, err := os.ReadFile(filepath.Join(api.CertDir, "sa-signer.key"))
	if err != nil {
		t.Fatalf("reading the API server's ServiceAccount key: %v", err)
	}
	block, _ := pem.Decode(keyPEM)
	var key crypto.Signer
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		key = k
	} else if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		key = k
	} else if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		key = k.(crypto.Signer)
	} else {
		t.Fatalf("ServiceAccount key: %v", err)
	}
	now := time.Now()
	claims := map[string]any{
		"iss": api.SecureServing.URL("https", "/").String(),
		"sub": "system:serviceaccount:" + ns + ":" + name,
		"aud": []string{Audience},
		"iat": now.Add(-2 * time.Hour).Unix(),
		"nbf": now.Add(-2 * time.Hour).Unix(),
		"exp": exp.Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      ns,
			"serviceaccount": map[string]any{"name": name, "uid": string(sa.UID)},
		},
	}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	alg := "RS256"
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		alg = "ES256"
	}
	signing := enc(map[string]string{"alg": alg, "typ": "JWT"}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signing))
	var sig []byte
	switch k := key.(type) {
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(nil, k, crypto.SHA256, sum[:])
	case *ecdsa.PrivateKey:
		// JWS wants the raw r||s form, not ASN.1.
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, k, sum[:])
		sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	}
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestIssuerSecretReloadKeepsOldLeavesValid(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ca := newRoot(t, 48*time.Hour)
	certA, keyA := ca.issuer(t, 24*time.Hour)
	ns := "weft-reload"
	_, _ = kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-issuer", Namespace: ns},
		Data:       map[string][]byte{KeyCert: certA, KeyKey: keyA, KeyBundle: ca.bundle()},
	}
	if _, err := kube.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	store := &Store{Client: kube, Namespace: ns, Name: "weft-issuer", Log: testr.New(t)}
	go func() { _ = store.Run(ctx) }()
	<-store.Synced()
	first := store.Current()
	if first == nil {
		t.Fatalf("no issuer after sync: %v", store.Err())
	}

	svc := &Service{TrustDomain: mustTD(t, "cluster.local"), Auth: TokenReviewer{Client: kube}, Issuers: store}
	token, _ := serviceAccount(t, "shop", "web", Audience)
	id := "spiffe://cluster.local/ns/shop/sa/web"
	oldResp, err := svc.Certify(ctx, &meshapiv1.CertifyRequest{Token: token, Csr: csrFor(t, mustKey(t), nil, id)})
	if err != nil {
		t.Fatal(err)
	}

	// cert-manager renews the issuer: same root, new intermediate.
	certB, keyB := ca.issuer(t, 24*time.Hour)
	secret.Data = map[string][]byte{KeyCert: certB, KeyKey: keyB, KeyBundle: ca.bundle()}
	if _, err := kube.CoreV1().Secrets(ns).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the renewed issuer is loaded", func() bool { return store.Current() != first })
	newResp, err := svc.Certify(ctx, &meshapiv1.CertifyRequest{Token: token, Csr: csrFor(t, mustKey(t), nil, id)})
	if err != nil {
		t.Fatal(err)
	}
	newIssuer, _ := x509.ParseCertificate(newResp.CertChain[1])
	if !newIssuer.Equal(store.Current().Certificate()) || newIssuer.Equal(first.Certificate()) {
		t.Fatal("the new leaf is not chained to the renewed issuer")
	}
	verifyWithGoSPIFFE(t, newResp, id)
	verifyWithGoSPIFFE(t, oldResp, id) // leaves of the old issuer stay valid during the overlap

	// A broken update is ignored: the last good issuer keeps signing.
	renewed := store.Current()
	secret.Data = map[string][]byte{KeyCert: []byte("garbage"), KeyKey: keyB, KeyBundle: ca.bundle()}
	if _, err := kube.CoreV1().Secrets(ns).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the broken Secret is reported", func() bool { return store.Err() != nil })
	if store.Current() != renewed {
		t.Fatal("a broken Secret replaced the working issuer")
	}
	if _, err := svc.Certify(ctx, &meshapiv1.CertifyRequest{Token: token, Csr: csrFor(t, mustKey(t), nil, id)}); err != nil {
		t.Fatalf("signing stopped after a broken Secret: %v", err)
	}
}

func TestTrustBundleWithTwoRootsDuringAnchorRotation(t *testing.T) {
	oldCA, newCA := newRoot(t, 48*time.Hour), newRoot(t, 96*time.Hour)
	bundle := append(oldCA.bundle(), newCA.bundle()...)
	oldCert, oldKey := oldCA.issuer(t, 24*time.Hour)
	newCert, newKey := newCA.issuer(t, 24*time.Hour)
	oldIss, err := ParseIssuer(oldCert, oldKey, bundle)
	if err != nil {
		t.Fatal(err)
	}
	newIss, err := ParseIssuer(newCert, newKey, bundle)
	if err != nil {
		t.Fatal(err)
	}
	token, _ := serviceAccount(t, "shop", "web", Audience)
	id := "spiffe://cluster.local/ns/shop/sa/web"
	for name, iss := range map[string]*Issuer{"old root": oldIss, "new root": newIss} {
		t.Run(name, func(t *testing.T) {
			resp, err := newService(t, iss).Certify(context.Background(), &meshapiv1.CertifyRequest{Token: token, Csr: csrFor(t, mustKey(t), nil, id)})
			if err != nil {
				t.Fatal(err)
			}
			verifyWithGoSPIFFE(t, resp, id)
		})
	}
}

// TestCertifyOverGRPC exercises the wire: TLS with the control plane's own
// certificate from the issuer, verified by the client with the trust bundle.
func TestCertifyOverGRPC(t *testing.T) {
	ca := newRoot(t, 48*time.Hour)
	iss := ca.mustIssuer(t, 24*time.Hour)
	cpID, _ := WorkloadID(mustTD(t, "cluster.local"), "weft-system", "weft-controlplane")
	serving, err := iss.ServingCertificate(cpID, []string{"weft-controlplane.weft-system.svc"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*serving}, MinVersion: tls.VersionTLS13})))
	meshapiv1.RegisterIdentityServer(srv, newService(t, iss))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(iss.BundlePEM())
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool, ServerName: "weft-controlplane.weft-system.svc", MinVersion: tls.VersionTLS13,
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	token, _ := serviceAccount(t, "shop", "web", Audience)
	id := "spiffe://cluster.local/ns/shop/sa/web"
	resp, err := meshapiv1.NewIdentityClient(conn).Certify(context.Background(), &meshapiv1.CertifyRequest{Token: token, Csr: csrFor(t, mustKey(t), nil, id)})
	if err != nil {
		t.Fatal(err)
	}
	verifyWithGoSPIFFE(t, resp, id)
	_, err = meshapiv1.NewIdentityClient(conn).Certify(context.Background(), &meshapiv1.CertifyRequest{Token: token, Csr: []byte{0x30, 0x00}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("garbage over the wire: %v, want InvalidArgument", err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The leaf lifetime follows the MeshControlPlane while the service runs,
// and never reaches past the issuer.
func TestCertifyLeafLifetime(t *testing.T) {
	ca := newRoot(t, 10*24*time.Hour)
	svc := newService(t, ca.mustIssuer(t, 5*24*time.Hour))
	token, _ := serviceAccount(t, "shop", "ttl", Audience)
	lifetime := func() time.Duration {
		t.Helper()
		resp, err := svc.Certify(context.Background(), &meshapiv1.CertifyRequest{
			Token: token, Csr: csrFor(t, mustKey(t), nil, "spiffe://cluster.local/ns/shop/sa/ttl"),
		})
		if err != nil {
			t.Fatalf("Certify: %v", err)
		}
		c, err := x509.ParseCertificate(resp.CertChain[0])
		if err != nil {
			t.Fatal(err)
		}
		return c.NotAfter.Sub(c.NotBefore)
	}
	near := func(got, want time.Duration) bool { return got > want-2*time.Minute && got <= want+2*time.Minute }
	if got := lifetime(); !near(got, 24*time.Hour) {
		t.Errorf("default lifetime %s, want 24h", got)
	}
	svc.SetLeafTTL(2 * time.Hour)
	if got := lifetime(); !near(got, 2*time.Hour) {
		t.Errorf("after SetLeafTTL(2h): %s", got)
	}
	svc.SetLeafTTL(7 * 24 * time.Hour)
	if got := lifetime(); got > 5*24*time.Hour+2*time.Minute {
		t.Errorf("lifetime %s reaches past the issuer's 5 days", got)
	}
	svc.SetLeafTTL(0)
	if got := lifetime(); !near(got, 24*time.Hour) {
		t.Errorf("SetLeafTTL(0): %s, want the default again", got)
	}
}
