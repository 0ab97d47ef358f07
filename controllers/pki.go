package controllers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/controlplane/identity"
)

// The built-in CA creates exactly two kinds of certificate the identity
// package does not: the self-signed trust anchor and the issuer below it.
// Everything that signs leaves (the webhook serving certificate) and every
// check of a chain goes through identity.ParseIssuer and Issuer.Sign, so the
// operator and the control plane agree on what a valid issuer is.

// renewAt is when a certificate is due for renewal: at 2/3 of its life.
func renewAt(c *x509.Certificate) time.Time {
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotBefore.Add(life * 2 / 3)
}

// keyPair is a PEM certificate and key.
type keyPair struct {
	CertPEM, KeyPEM []byte
	Cert            *x509.Certificate
}

func newKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// newTrustAnchor creates a self-signed root for trustDomain.
func newTrustAnchor(trustDomain string, lifetime time.Duration, now time.Time) (keyPair, error) {
	key, keyPEM, err := newKey()
	if err != nil {
		return keyPair{}, err
	}
	sn, err := serial()
	if err != nil {
		return keyPair{}, err
	}
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return keyPair{}, fmt.Errorf("trust domain: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{Organization: []string{"weft"}, CommonName: "weft trust anchor " + trustDomain},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return keyPair{}, fmt.Errorf("signing the trust anchor: %w", err)
	}
	return parsedPair(der, keyPEM)
}

// newIssuerCert creates the intermediate that signs workload certificates.
// MaxPathLen 0: it may sign leaves, not further CAs.
func newIssuerCert(anchor keyPair, anchorKeyPEM []byte, trustDomain string, lifetime time.Duration, now time.Time) (keyPair, error) {
	parent, err := identity.ParseIssuer(anchor.CertPEM, anchorKeyPEM, anchor.CertPEM)
	if err != nil {
		return keyPair{}, fmt.Errorf("trust anchor: %w", err)
	}
	anchorKey, err := identity.ParseKeyPEM(anchorKeyPEM)
	if err != nil {
		return keyPair{}, err
	}
	key, keyPEM, err := newKey()
	if err != nil {
		return keyPair{}, err
	}
	sn, err := serial()
	if err != nil {
		return keyPair{}, err
	}
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return keyPair{}, fmt.Errorf("trust domain: %w", err)
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(parent.NotAfter()) {
		notAfter = parent.NotAfter()
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{Organization: []string{"weft"}, CommonName: "weft issuer " + trustDomain},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent.Certificate(), key.Public(), anchorKey)
	if err != nil {
		return keyPair{}, fmt.Errorf("signing the issuer: %w", err)
	}
	return parsedPair(der, keyPEM)
}

func parsedPair(der, keyPEM []byte) (keyPair, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), KeyPEM: keyPEM, Cert: c}, nil
}

// mergeBundle is the trust bundle during and after an anchor rotation: the
// current anchor first, then every previous root that has not expired yet,
// so that certificates issued under an old anchor keep verifying until they
// could no longer be valid anyway.
func mergeBundle(current *x509.Certificate, previous []*x509.Certificate, now time.Time) []*x509.Certificate {
	out := []*x509.Certificate{current}
	for _, c := range previous {
		if !c.IsCA || now.After(c.NotAfter) || slices.ContainsFunc(out, func(o *x509.Certificate) bool { return o.Equal(c) }) {
			continue
		}
		out = append(out, c)
	}
	return out
}
