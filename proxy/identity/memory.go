package identity

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// NewMemorySource returns an empty Source fed only through Set and SetBundle,
// for material that never touches the disk (the key is generated in memory
// and the certificate comes from the control plane).
func NewMemorySource(log *slog.Logger) *Source {
	if log == nil {
		log = slog.Default()
	}
	return &Source{log: log}
}

// FromDER builds material from a certificate chain (DER, leaf first) issued
// for key, checked like Parse: the leaf must be an SVID for key's public key
// and verify against the bundle.
func FromDER(chainDER [][]byte, key crypto.Signer, bundlePEM []byte) (*Material, error) {
	if len(chainDER) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	if len(chainDER) > maxChain {
		return nil, fmt.Errorf("certificate chain of %d certificates is too long", len(chainDER))
	}
	chain := make([]*x509.Certificate, 0, len(chainDER))
	for i, der := range chainDER {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of the chain: %w", i, err)
		}
		chain = append(chain, c)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(chain[0].PublicKey) {
		return nil, errors.New("the leaf certificate is not for this proxy's key")
	}
	pair := &tls.Certificate{Certificate: chainDER, PrivateKey: key, Leaf: chain[0]}
	return build(pair, chain, bundlePEM)
}

// SetBundle replaces the trust bundle of the current material, keeping its
// certificate: peers are verified against the new roots from the next
// handshake on. It reports whether the bundle differed from the one in use,
// and whether the proxy's own certificate chains to it; when it does not (an
// anchor rotation removed the root it was issued under), the caller should
// get a new certificate soon.
func (s *Source) SetBundle(bundlePEM []byte) (changed, ownVerifies bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	if cur == nil {
		return false, false, errNoIdentity
	}
	bundle, err := ParseBundle(cur.ID.TrustDomain(), bundlePEM)
	if err != nil {
		return false, false, err
	}
	if bundle.Equal(cur.Bundle) {
		return false, verifiesOwn(cur), nil
	}
	m := &Material{Cert: cur.Cert, ID: cur.ID, Bundle: bundle, Loaded: time.Now()}
	s.cur.Store(m)
	s.log.Info("Trust bundle replaced", "roots", len(bundle.X509Authorities()), "previousRoots", len(cur.Bundle.X509Authorities()))
	return true, verifiesOwn(m), nil
}

func verifiesOwn(m *Material) bool {
	chain := make([]*x509.Certificate, 0, len(m.Cert.Certificate))
	for _, der := range m.Cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return false
		}
		chain = append(chain, c)
	}
	_, _, err := x509svid.Verify(chain, m.Bundle)
	return err == nil
}

// BundlePEM returns the current trust bundle as PEM, or nil.
func (s *Source) BundlePEM() []byte {
	m := s.cur.Load()
	if m == nil {
		return nil
	}
	b, err := m.Bundle.Marshal()
	if err != nil {
		return nil
	}
	return b
}
