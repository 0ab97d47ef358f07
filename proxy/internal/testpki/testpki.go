// Package testpki mints throwaway X.509 material for tests and benchmarks: a
// root, an intermediate and SPIFFE leaves, including the bad ones a proxy must
// refuse (expired, CA leaf, signed by an untrusted root). It must never be
// imported by production code.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

var serial atomic.Int64

// TB is the part of testing.TB used here, so that a command (mkcerts, used
// by the benchmark) can mint the same material as the tests.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// CA is a signing certificate with its key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// Chain is the CA's own chain up to (not including) the root.
	Chain []*x509.Certificate
}

// Leaf is an issued certificate, its key and the intermediates to send with it.
type Leaf struct {
	Cert  *x509.Certificate
	Key   *ecdsa.PrivateKey
	Chain []*x509.Certificate
}

// LeafOpts tweaks a leaf to make it bad on purpose.
type LeafOpts struct {
	NotBefore, NotAfter time.Time
	IsCA                bool
}

// NewRoot returns a self-signed root CA.
func NewRoot(t TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	return &CA{Cert: sign(t, tmpl, tmpl, &key.PublicKey, key), Key: key}
}

// Intermediate returns a CA signed by ca.
func (ca *CA) Intermediate(t TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(12 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	cert := sign(t, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	return &CA{Cert: cert, Key: key, Chain: append([]*x509.Certificate{cert}, ca.Chain...)}
}

// Leaf issues a SPIFFE X.509 SVID for id ("spiffe://td/ns/x/sa/y").
func (ca *CA) Leaf(t TB, id string, o LeafOpts) *Leaf {
	t.Helper()
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	nb, na := o.NotBefore, o.NotAfter
	if nb.IsZero() {
		nb = time.Now().Add(-time.Minute)
	}
	if na.IsZero() {
		na = time.Now().Add(time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		NotBefore:             nb,
		NotAfter:              na,
		URIs:                  []*url.URL{u},
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if o.IsCA {
		tmpl.IsCA = true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	return &Leaf{Cert: sign(t, tmpl, ca.Cert, &key.PublicKey, ca.Key), Key: key, Chain: ca.Chain}
}

// Files are the paths a proxy reads its identity from.
type Files struct {
	Cert, Key, Bundle string
}

// Write writes the leaf (with its chain), its key and the given roots as the
// bundle into dir, replacing any previous files atomically (rename), as a
// secret volume update would.
func (l *Leaf) Write(t TB, dir string, roots ...*CA) Files {
	t.Helper()
	f := Files{
		Cert:   filepath.Join(dir, "cert.pem"),
		Key:    filepath.Join(dir, "key.pem"),
		Bundle: filepath.Join(dir, "bundle.pem"),
	}
	var certs []byte
	for _, c := range append([]*x509.Certificate{l.Cert}, l.Chain...) {
		certs = append(certs, pemCert(c)...)
	}
	der, err := x509.MarshalECPrivateKey(l.Key)
	if err != nil {
		t.Fatal(err)
	}
	var bundle []byte
	for _, r := range roots {
		bundle = append(bundle, pemCert(r.Cert)...)
	}
	writeAtomic(t, f.Key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	writeAtomic(t, f.Cert, certs)
	writeAtomic(t, f.Bundle, bundle)
	return f
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func writeAtomic(t TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func newKey(t TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sign(t TB, tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
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
