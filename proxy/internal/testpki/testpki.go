// Package testpki mints throwaway X.509 material for tests and benchmarks: a
// root, an intermediate and SPIFFE leaves, including the bad ones a proxy must
// refuse (expired, CA leaf, signed by an untrusted root). It must never be
// imported by production code.
package testpki

import (
	"crypto"
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
	Key  *ecdsa.PrivateKey // nil when the CA's key is not ECDSA
	// Signer is the CA's key whatever its type; when nil, Key signs.
	Signer crypto.Signer
	// Chain is the CA's own chain up to (not including) the root.
	Chain []*x509.Certificate
}

// Leaf is an issued certificate, its key and the intermediates to send with it.
type Leaf struct {
	Cert  *x509.Certificate
	Key   *ecdsa.PrivateKey // nil when the leaf's key is not ECDSA
	Chain []*x509.Certificate
	// Signer is the leaf's key whatever its type (the same key as Key when
	// that is set).
	Signer crypto.Signer
}

// LeafOpts tweaks a leaf to make it bad on purpose.
type LeafOpts struct {
	NotBefore, NotAfter time.Time
	IsCA                bool
	// Key is the leaf's key; nil means a new ECDSA P-256 key. Set it to
	// mint a leaf of another algorithm or size, or several certificates
	// for one key.
	Key crypto.Signer
}

// NewRoot returns a self-signed root CA with a new ECDSA P-256 key.
func NewRoot(t TB, name string) *CA {
	t.Helper()
	return NewRootWithKey(t, name, newKey(t))
}

// NewRootWithKey returns a self-signed root CA for key, e.g. an RSA root.
func NewRootWithKey(t TB, name string, key crypto.Signer) *CA {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	return newCA(sign(t, tmpl, tmpl, key.Public(), key), key, nil)
}

// Intermediate returns a CA signed by ca, with a new ECDSA P-256 key.
func (ca *CA) Intermediate(t TB, name string) *CA {
	t.Helper()
	return ca.IntermediateWithKey(t, name, newKey(t))
}

// IntermediateWithKey returns a CA for key signed by ca.
func (ca *CA) IntermediateWithKey(t TB, name string, key crypto.Signer) *CA {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(12 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	cert := sign(t, tmpl, ca.Cert, key.Public(), ca.signer())
	return newCA(cert, key, append([]*x509.Certificate{cert}, ca.Chain...))
}

func newCA(cert *x509.Certificate, key crypto.Signer, chain []*x509.Certificate) *CA {
	ca := &CA{Cert: cert, Signer: key, Chain: chain}
	ca.Key, _ = key.(*ecdsa.PrivateKey)
	return ca
}

// signer lets a CA built as a literal with only Key set still sign.
func (ca *CA) signer() crypto.Signer {
	if ca.Signer != nil {
		return ca.Signer
	}
	return ca.Key
}

// Leaf issues a SPIFFE X.509 SVID for id ("spiffe://td/ns/x/sa/y").
func (ca *CA) Leaf(t TB, id string, o LeafOpts) *Leaf {
	t.Helper()
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	key := o.Key
	if key == nil {
		key = newKey(t)
	}
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
	l := &Leaf{Cert: sign(t, tmpl, ca.Cert, key.Public(), ca.signer()), Chain: ca.Chain, Signer: key}
	l.Key, _ = key.(*ecdsa.PrivateKey)
	return l
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
	keyPEM := l.KeyPEM(t)
	var bundle []byte
	for _, r := range roots {
		bundle = append(bundle, pemCert(r.Cert)...)
	}
	WriteAtomic(t, f.Key, keyPEM)
	WriteAtomic(t, f.Cert, certs)
	WriteAtomic(t, f.Bundle, bundle)
	return f
}

// KeyPEM returns the leaf's key as PEM: SEC1 for ECDSA keys (as cert-manager
// writes them), PKCS#8 for any other.
func (l *Leaf) KeyPEM(t TB) []byte {
	t.Helper()
	if l.Key != nil {
		der, err := x509.MarshalECPrivateKey(l.Key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	der, err := x509.MarshalPKCS8PrivateKey(l.Signer)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// WriteAtomic replaces path with data in one rename, so that a reader sees
// the old content or the new, never a part.
func WriteAtomic(t TB, path string, data []byte) {
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

func sign(t TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
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
