// Package identity is the mesh's workload certificate authority: it holds the
// issuer (intermediate) certificate and key read from a Secret, signs proxies'
// CSRs for exactly the SPIFFE identity their ServiceAccount token proves, and
// serves the trust bundle.
//
// It never creates or rotates the trust anchor or the issuer (the operator
// does) and never sees a proxy's private key (proxies keep theirs in memory).
package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Issuer signs workload certificates. It is immutable; a renewed issuer is a
// new Issuer (see Store).
type Issuer struct {
	cert      *x509.Certificate
	key       crypto.Signer
	roots     []*x509.Certificate
	bundlePEM []byte
	// notAfter is the earliest expiry in the issuer's chain: no leaf may
	// outlive it.
	notAfter time.Time
}

// ParseIssuer reads an issuer from PEM: its certificate (optionally followed by
// intermediates), its private key, and the trust bundle (one or more roots). It
// refuses an issuer that is not a CA, whose key does not match, or that does
// not chain to the bundle.
func ParseIssuer(certPEM, keyPEM, bundlePEM []byte) (*Issuer, error) {
	certs, err := ParseCertsPEM(certPEM)
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("issuer certificate: %v", orNone(err))
	}
	roots, err := ParseCertsPEM(bundlePEM)
	if err != nil || len(roots) == 0 {
		return nil, fmt.Errorf("trust bundle: %v", orNone(err))
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	cert := certs[0]
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("issuer certificate is not a CA allowed to sign certificates")
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("issuer key does not match the issuer certificate")
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := cert.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, fmt.Errorf("issuer does not chain to the trust bundle: %w", err)
	}
	notAfter := cert.NotAfter
	for _, c := range chains[0] {
		if c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}
	return &Issuer{cert: cert, key: key, roots: roots, bundlePEM: EncodeCertsPEM(roots), notAfter: notAfter}, nil
}

func orNone(err error) any {
	if err != nil {
		return err
	}
	return "no certificate found"
}

// Certificate is the issuer's certificate.
func (i *Issuer) Certificate() *x509.Certificate { return i.cert }

// Roots are the trusted roots.
func (i *Issuer) Roots() []*x509.Certificate { return i.roots }

// BundlePEM is the trust bundle in PEM.
func (i *Issuer) BundlePEM() []byte { return i.bundlePEM }

// NotAfter is when the issuer (or a CA above it) expires.
func (i *Issuer) NotAfter() time.Time { return i.notAfter }

// LeafTemplate describes a certificate to sign.
type LeafTemplate struct {
	ID       spiffeid.ID
	DNSNames []string
	TTL      time.Duration
	// Now is the signing time; zero means time.Now().
	Now time.Time
}

// Sign issues a leaf for pub, with both client and server auth since every
// proxy is both. The leaf never outlives the issuer or the root.
func (i *Issuer) Sign(pub crypto.PublicKey, t LeafTemplate) ([][]byte, time.Time, error) {
	now := t.Now
	if now.IsZero() {
		now = time.Now()
	}
	notAfter := now.Add(t.TTL)
	if notAfter.After(i.notAfter) {
		notAfter = i.notAfter
	}
	if !notAfter.After(now) {
		return nil, time.Time{}, errors.New("the issuer has expired")
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, time.Time{}, err
	}
	u := t.ID.URL()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// Backdated a little so that a peer whose clock is slightly behind
		// accepts a fresh certificate.
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
		DNSNames:              t.DNSNames,
		Subject:               pkix.Name{},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, i.cert, pub, i.key)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("signing: %w", err)
	}
	return [][]byte{der, i.cert.Raw}, notAfter, nil
}

// ServingCertificate issues a fresh key and certificate for the control plane
// itself, so proxies can verify it by SPIFFE ID with the mesh's trust bundle.
func (i *Issuer) ServingCertificate(id spiffeid.ID, dnsNames []string, ttl time.Duration) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	chain, _, err := i.Sign(key.Public(), LeafTemplate{ID: id, DNSNames: dnsNames, TTL: ttl})
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

// Fingerprint identifies the issuer certificate (for logs and metrics).
func (i *Issuer) Fingerprint() string {
	sum := sha256.Sum256(i.cert.Raw)
	return fmt.Sprintf("%x", sum[:8])
}

// ParseCertsPEM reads every certificate in data, skipping other PEM blocks.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// EncodeCertsPEM writes certs as PEM CERTIFICATE blocks.
func EncodeCertsPEM(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// ParseKeyPEM reads a private key in SEC 1 (EC), PKCS #1 (RSA) or PKCS #8 PEM.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var k any
	var err error
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", k)
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}
