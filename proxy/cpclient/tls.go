package cpclient

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// maxChain bounds the chain the control plane may present.
const maxChain = 8

// tlsConfig is the client side of the control plane's port. The serving
// certificate is checked in VerifyConnection rather than by crypto/tls so
// that the roots are those current at handshake time: the anchors from the
// environment plus the latest trust bundle, which after an anchor rotation
// holds a root the environment (set when the pod was created) lacks. With
// clientCert the workload certificate current at handshake time is
// presented (Config); without, none is (Identity), so that an expired or
// no-longer-trusted certificate cannot stand in the way of getting a new one.
func (c *Client) tlsConfig(clientCert bool) *tls.Config {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		ServerName:         c.s.serverName,
		InsecureSkipVerify: true, // verified by verifyServer against the current roots
		VerifyConnection:   c.verifyServer,
	}
	if clientCert {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			m := c.s.Identity.Current()
			if m == nil {
				return nil, errors.New("no workload certificate yet")
			}
			return m.Cert, nil
		}
	}
	return cfg
}

func (c *Client) verifyServer(cs tls.ConnectionState) error {
	certs := cs.PeerCertificates
	if len(certs) == 0 || len(certs) > maxChain {
		return fmt.Errorf("control plane sent %d certificates", len(certs))
	}
	roots := x509.NewCertPool()
	for _, a := range c.s.anchors {
		roots.AddCert(a)
	}
	if m := c.s.Identity.Current(); m != nil {
		for _, a := range m.Bundle.X509Authorities() {
			roots.AddCert(a)
		}
	}
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		DNSName:       c.s.serverName,
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("control plane certificate not trusted for %q: %w", c.s.serverName, err)
	}
	return nil
}

// parseCerts reads every CERTIFICATE block of a PEM bundle and refuses
// anything else, and an empty bundle.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for len(b) > 0 {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}
