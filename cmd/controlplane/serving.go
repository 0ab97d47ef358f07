package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/controlplane/identity"
)

// servingTTL is the life of the control plane's own certificate; it is
// reissued at two thirds of it, or at once when the issuer changes.
const servingTTL = 24 * time.Hour

// servingCerts holds the gRPC serving certificate and the trusted roots,
// both derived from the current issuer.
type servingCerts struct {
	id       spiffeid.ID
	dnsNames []string
	log      logr.Logger

	cert  atomic.Pointer[tls.Certificate]
	roots atomic.Pointer[x509.CertPool]
}

func (s *servingCerts) Cert() *tls.Certificate { return s.cert.Load() }

func (s *servingCerts) Roots() *x509.CertPool {
	if p := s.roots.Load(); p != nil {
		return p
	}
	return x509.NewCertPool()
}

// issue replaces the certificate and roots from iss. A failure keeps the
// previous certificate (it is still valid under the old issuer, which the
// bundle usually still trusts during a rotation).
func (s *servingCerts) issue(iss *identity.Issuer) {
	if iss == nil {
		return
	}
	pool := x509.NewCertPool()
	for _, r := range iss.Roots() {
		pool.AddCert(r)
	}
	s.roots.Store(pool)
	c, err := iss.ServingCertificate(s.id, s.dnsNames, servingTTL)
	if err != nil {
		s.log.Error(err, "Issuing the control plane's serving certificate failed; keeping the previous one")
		return
	}
	s.cert.Store(c)
	s.log.Info("Issued the serving certificate", "identity", s.id.String(), "dnsNames", s.dnsNames, "notAfter", c.Leaf.NotAfter)
}

// renew reissues the certificate when two thirds of its life have passed.
func (s *servingCerts) renew(ctx context.Context, store *identity.Store) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		c := s.cert.Load()
		if c == nil || time.Until(c.Leaf.NotAfter) < servingTTL/3 {
			s.issue(store.Current())
		}
	}
}
