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
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
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

// Load reads and checks the files: key matches certificate, both are ECDSA
// P-256, the leaf is a valid SVID, and it verifies against the bundle (so a
// half-written rotation is refused rather than served).
func Load(f Files) (*Material, error) {
	certPEM, keyPEM, bundlePEM, err := readFiles(f)
	if err != nil {
		return nil, err
	}
	return Parse(certPEM, keyPEM, bundlePEM)
}

func readFiles(f Files) (certPEM, keyPEM, bundlePEM []byte, err error) {
	if certPEM, err = os.ReadFile(f.Cert); err != nil {
		return nil, nil, nil, err
	}
	if keyPEM, err = os.ReadFile(f.Key); err != nil {
		return nil, nil, nil, err
	}
	if bundlePEM, err = os.ReadFile(f.Bundle); err != nil {
		return nil, nil, nil, err
	}
	return certPEM, keyPEM, bundlePEM, nil
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
// bundle. Every constructor of Material (Parse, Load, FromDER) goes through it.
func build(pair *tls.Certificate, chain []*x509.Certificate, bundlePEM []byte) (*Material, error) {
	if len(chain) > maxChain {
		return nil, fmt.Errorf("certificate chain of %d certificates is too long", len(chain))
	}
	if err := checkKey("own certificate's", chain[0].PublicKey); err != nil {
		return nil, err
	}
	// The private key needs no check of its own: X509KeyPair and FromDER
	// refuse one that does not match the leaf's public key.
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

// checkKey refuses a leaf key other than ECDSA P-256, the one kind the mesh
// issues: a proxy must not serve, nor accept from a peer, a key that the
// rest of the mesh was not built and measured for. CA keys are not checked:
// roots come from outside the mesh and may be RSA or another curve.
func checkKey(whose string, pub crypto.PublicKey) error {
	if k, ok := pub.(*ecdsa.PublicKey); ok && k.Curve == elliptic.P256() {
		return nil
	}
	return fmt.Errorf("%s key is %s: SVIDs must use ECDSA P-256", whose, keyName(pub))
}

// keyName names a public key as a user reads it: "RSA 2048", "ECDSA P-384".
func keyName(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == nil {
			return "ECDSA without a curve"
		}
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	default:
		return fmt.Sprintf("of type %T", pub)
	}
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

	mu  sync.Mutex        // serialises Reload
	sum [sha256.Size]byte // content of the files behind cur
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

// Reload reads the files and, if their content changed, checks and installs
// them. Content, not size and mtime: a renewal of the same size written
// within one mtime tick, or with the mtime preserved, would be missed. On
// error the previous material stays in use. Files that failed are parsed
// again at the next call even if unchanged, since a leaf refused only as not
// yet valid (clock skew) becomes good without being rewritten. A Source
// without files (NewMemorySource) has nothing to reload.
func (s *Source) Reload() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files == (Files{}) {
		return false, nil
	}
	certPEM, keyPEM, bundlePEM, err := readFiles(s.files)
	if err != nil {
		return false, err
	}
	sum := contentSum(certPEM, keyPEM, bundlePEM)
	if sum == s.sum && s.cur.Load() != nil {
		return false, nil
	}
	m, err := Parse(certPEM, keyPEM, bundlePEM)
	if err != nil {
		return false, err
	}
	s.sum = sum
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

// contentSum hashes the files with their lengths, so that bytes moving from
// one file to the next still change the sum.
func contentSum(files ...[]byte) [sha256.Size]byte {
	h := sha256.New()
	for _, b := range files {
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(b))))
		h.Write(b)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
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
	if err := checkKey("peer certificate's", certs[0].PublicKey); err != nil {
		return spiffeid.ID{}, err
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
