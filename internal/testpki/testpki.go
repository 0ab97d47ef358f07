// Package testpki mints throwaway CAs for tests and benchmarks: a root and an
// intermediate issuer, in the PEM form the issuer Secret holds (tls.crt,
// tls.key, ca.crt). Production certificates come from controllers/pki.go;
// this is only the shortest way to a valid chain.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"time"
)

// Chain is a root and an issuer signed by it, valid from an hour ago for
// two days.
type Chain struct {
	Root *x509.Certificate
	// IssuerPEM, IssuerKeyPEM and BundlePEM are the issuer Secret's tls.crt,
	// tls.key and ca.crt.
	IssuerPEM, IssuerKeyPEM, BundlePEM []byte
}

// NewChain mints a root named rootCN and an issuer named issuerCN.
func NewChain(rootCN, issuerCN string) (*Chain, error) {
	root, rootKey, err := caCert(rootCN, nil, nil)
	if err != nil {
		return nil, err
	}
	issuer, issuerKey, err := caCert(issuerCN, root, rootKey)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(issuerKey)
	if err != nil {
		return nil, err
	}
	return &Chain{
		Root:         root,
		IssuerPEM:    PEM("CERTIFICATE", issuer.Raw),
		IssuerKeyPEM: PEM("PRIVATE KEY", kder),
		BundlePEM:    PEM("CERTIFICATE", root.Raw),
	}, nil
}

// PEM encodes one block.
func PEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// caCert makes a CA certificate signed by parent (self-signed when nil).
func caCert(cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}
