// Package identity owns the proxy's mTLS material: its X.509 SVID (a SPIFFE
// leaf with its key and chain) and the trust bundle, loaded from files, checked,
// and swapped atomically so that a rotation never drops an open connection. It
// builds the TLS configurations used between proxies (TLS 1.3 only, both sides
// present SVIDs, peers verified with go-spiffe).
//
// It also holds material handed to it in memory (NewMemorySource, FromDER,
// SetBundle), which is how proxy/cpclient installs what the control plane
// issues. It must not fetch certificates itself and must not decide who may
// call whom (authorization).
package identity

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ALPN protocol names spoken between two proxies. The inbound side learns from
// them how to treat the stream without detecting again: "h2" carries many HTTP
// requests multiplexed on one connection (HTTP/2 from the app; with the h2
// mesh protocol HTTP/1 too), "http/1.1" carries keep-alive HTTP/1.1 (HTTP/1
// from the app with the default auto mesh protocol, and every Upgrade, e.g.
// WebSocket, which HTTP/2 cannot carry without extended CONNECT), and
// "weft/tcp" carries opaque bytes. The inbound listener has offered all three
// since the first release, so a client may pick any of them per connection.
const (
	ALPNH2   = "h2"
	ALPNH1   = "http/1.1"
	ALPNTCP  = "weft/tcp"
	minTLSv  = tls.VersionTLS13
	maxChain = 8
)

// Files are where the material is read from.
type Files struct {
	Cert   string // PEM: leaf first, then intermediates
	Key    string // PEM: PKCS#8 or SEC1 EC key
	Bundle string // PEM: trust anchors (several allowed, for root rotation)
}

// Material is one consistent set of identity data. It is never mutated.
type Material struct {
	Cert   *tls.Certificate
	ID     spiffeid.ID
	Bundle *x509bundle.Bundle
	Loaded time.Time
}

// Load reads and checks the files: key matches certificate, the leaf is a
// valid SVID, and it verifies against the bundle (so a half-written rotation
// is refused rather than served).
func Load(f Files) (*Material, error) {
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return nil, err
	}
	bundlePEM, err := os.ReadFile(f.Bundle)
	if err != nil {
		return nil, err
	}
	return Parse(certPEM, keyPEM, bundlePEM)
}

// Parse is Load from memory.
func Parse(certPEM, keyPEM, bundlePEM []byte) (*Material, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate and key: %w", err)
	}
	chain := make([]*x509.Certificate, 0, len(pair.Certificate))
	for _, der := range pair.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate: %w", err)
		}
		chain = append(chain, c)
	}
	pair.Leaf = chain[0]
	return build(&pair, chain, bundlePEM)
}

// build checks a key pair whose chain is already parsed and pairs it with the
// bundle.
func build(pair *tls.Certificate, chain []*x509.Certificate, bundlePEM []byte) (*Material, error) {
	if len(chain) > maxChain {
		return nil, fmt.Errorf("certificate chain of %d certificates is too long", len(chain))
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil, fmt.Errorf("leaf is not an SVID: %w", err)
	}
	bundle, err := ParseBundle(id.TrustDomain(), bundlePEM)
	if err != nil {
		return nil, err
	}
	if _, _, err := x509svid.Verify(chain, bundle); err != nil {
		return nil, fmt.Errorf("own SVID does not verify against the bundle: %w", err)
	}
	return &Material{Cert: pair, ID: id, Bundle: bundle, Loaded: time.Now()}, nil
}

// ParseBundle parses a PEM trust bundle of td and refuses an empty one.
func ParseBundle(td spiffeid.TrustDomain, bundlePEM []byte) (*x509bundle.Bundle, error) {
	bundle, err := x509bundle.Parse(td, bundlePEM)
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	if len(bundle.X509Authorities()) == 0 {
		return nil, errors.New("trust bundle holds no certificate")
	}
	return bundle, nil
}

// Source holds the current material. The zero value has none; handshakes fail
// until Set or Reload succeeds.
type Source struct {
	files Files
	log   *slog.Logger
	cur   atomic.Pointer[Material]

	mu    sync.Mutex // serialises Reload
	stamp string
}

// NewSource loads f once; the error is returned so that a proxy does not start
// without an identity when one was configured.
func NewSource(f Files, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Source{files: f, log: log}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Current returns the material in use, or nil.
func (s *Source) Current() *Material { return s.cur.Load() }

// Set installs m; open connections keep the keys they negotiated.
func (s *Source) Set(m *Material) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur.Store(m)
}

// Reload re-reads the files if their size or mtime changed. On error the
// previous material stays in use. A Source without files (NewMemorySource)
// has nothing to reload.
func (s *Source) Reload() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files == (Files{}) {
		return false, nil
	}
	stamp := fileStamp(s.files.Cert, s.files.Key, s.files.Bundle)
	if stamp == s.stamp && s.cur.Load() != nil {
		return false, nil
	}
	m, err := Load(s.files)
	if err != nil {
		return false, err
	}
	s.stamp = stamp
	old := s.cur.Swap(m)
	if old == nil || !bytes.Equal(old.Cert.Leaf.Raw, m.Cert.Leaf.Raw) || !old.Bundle.Equal(m.Bundle) {
		s.log.Info("Identity loaded", "id", m.ID.String(), "notAfter", m.Cert.Leaf.NotAfter, "roots", len(m.Bundle.X509Authorities()))
	}
	return true, nil
}

// Watch polls the files until ctx ends. Polling (not inotify) because secret
// volumes swap a symlink, which inotify on the file itself misses.
func (s *Source) Watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.Reload(); err != nil {
				s.log.Error("Identity reload failed, keeping the previous one", "err", err)
			}
		}
	}
}

func fileStamp(paths ...string) string {
	var b bytes.Buffer
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%d/%d;", fi.Size(), fi.ModTime().UnixNano())
		} else {
			b.WriteString("-;")
		}
	}
	return b.String()
}

var errNoIdentity = errors.New("no identity loaded")

// ClientConfig is the TLS config to reach a proxy that must present want.
// Verification happens in VerifyConnection against the bundle current at
// handshake time, so a rotated bundle applies to new connections at once.
func (s *Source) ClientConfig(want spiffeid.ID, alpn string) *tls.Config {
	return &tls.Config{
		MinVersion:         minTLSv,
		NextProtos:         []string{alpn},
		InsecureSkipVerify: true, // replaced by verifySPIFFE: names are SPIFFE IDs, not DNS
		ServerName:         want.TrustDomain().Name(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			m := s.cur.Load()
			if m == nil {
				return nil, errNoIdentity
			}
			return m.Cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := s.verify(cs.PeerCertificates)
			if err != nil {
				return err
			}
			if id != want {
				return fmt.Errorf("peer is %s, expected %s", id, want)
			}
			if cs.NegotiatedProtocol != alpn {
				return fmt.Errorf("peer negotiated %q, expected %q", cs.NegotiatedProtocol, alpn)
			}
			return nil
		},
	}
}

// ServerConfig is the TLS config of the inbound listener: any SVID that
// verifies against the bundle is accepted; the caller reads it with PeerID.
func (s *Source) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: minTLSv,
		NextProtos: []string{ALPNH2, ALPNH1, ALPNTCP},
		ClientAuth: tls.RequireAnyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			m := s.cur.Load()
			if m == nil {
				return nil, errNoIdentity
			}
			return m.Cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.NegotiatedProtocol == "" {
				return errors.New("client did not negotiate a mesh protocol (ALPN)")
			}
			_, err := s.verify(cs.PeerCertificates)
			return err
		},
	}
}

func (s *Source) verify(certs []*x509.Certificate) (spiffeid.ID, error) {
	m := s.cur.Load()
	if m == nil {
		return spiffeid.ID{}, errNoIdentity
	}
	if len(certs) == 0 || len(certs) > maxChain {
		return spiffeid.ID{}, fmt.Errorf("peer sent %d certificates", len(certs))
	}
	id, _, err := x509svid.Verify(certs, m.Bundle)
	return id, err
}

// PeerID returns the SPIFFE ID of a verified peer. Only call it on a
// connection whose handshake used a config from this package.
func PeerID(cs tls.ConnectionState) (spiffeid.ID, bool) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, false
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	return id, err == nil
}
