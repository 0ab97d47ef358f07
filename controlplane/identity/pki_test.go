package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"
)

// testCA mints the chain the operator would: a self-signed root and an
// intermediate issuer (path length 0) signed by it.
type testCA struct {
	root    *x509.Certificate
	rootKey *ecdsa.PrivateKey
}

func newRoot(t *testing.T, ttl time.Duration) *testCA {
	t.Helper()
	key := mustKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "weft test root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(ttl),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{root: c, rootKey: key}
}

// issuer returns PEM cert and key of a new intermediate.
func (ca *testCA) issuer(t *testing.T, ttl time.Duration) (certPEM, keyPEM []byte) {
	t.Helper()
	key := mustKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "weft test issuer"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(ttl),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, key.Public(), ca.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", kder)
}

func (ca *testCA) bundle() []byte { return pemBlock("CERTIFICATE", ca.root.Raw) }

func (ca *testCA) mustIssuer(t *testing.T, ttl time.Duration) *Issuer {
	t.Helper()
	c, k := ca.issuer(t, ttl)
	iss, err := ParseIssuer(c, k, ca.bundle())
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// csrFor builds a DER CSR; uris are SPIFFE IDs to ask for.
func csrFor(t *testing.T, key crypto.Signer, dns []string, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{DNSNames: dns}
	for _, u := range uris {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, p)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func rsaKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseIssuerRefusesBadMaterial(t *testing.T) {
	ca := newRoot(t, 48*time.Hour)
	other := newRoot(t, 48*time.Hour)
	certPEM, keyPEM := ca.issuer(t, 24*time.Hour)
	_, otherKey := ca.issuer(t, 24*time.Hour)
	leafKey, _ := x509.MarshalPKCS8PrivateKey(mustKey(t))
	cases := []struct {
		name              string
		cert, key, bundle []byte
		want              string
	}{
		{"no certificate", nil, keyPEM, ca.bundle(), "issuer certificate"},
		{"no bundle", certPEM, keyPEM, nil, "trust bundle"},
		{"key of another issuer", certPEM, otherKey, ca.bundle(), "does not match"},
		{"garbage key", certPEM, []byte("nope"), ca.bundle(), "issuer key"},
		{"wrong root", certPEM, keyPEM, other.bundle(), "does not chain"},
		{"root used as issuer without its key", ca.bundle(), pemBlock("PRIVATE KEY", leafKey), ca.bundle(), "does not match"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseIssuer(tc.cert, tc.key, tc.bundle)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestLeafNeverOutlivesItsIssuer(t *testing.T) {
	ca := newRoot(t, 48*time.Hour)
	iss := ca.mustIssuer(t, 2*time.Hour)
	id, _ := WorkloadID(mustTD(t, "cluster.local"), "shop", "web")
	chain, notAfter, err := iss.Sign(mustKey(t).Public(), LeafTemplate{ID: id, TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(chain[0])
	if !leaf.NotAfter.Equal(iss.NotAfter()) || !notAfter.Equal(iss.NotAfter()) {
		t.Fatalf("leaf expires %v, issuer %v: a leaf must not outlive its issuer", leaf.NotAfter, iss.NotAfter())
	}
}
