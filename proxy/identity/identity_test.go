package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/proxy/internal/testpki"
)

const id = "spiffe://cluster.local/ns/a/sa/web"

// rsaKey is shared by the tests: RSA keys are slow to generate.
var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func p384Key(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestLoad(t *testing.T) {
	root := testpki.NewRoot(t, "root")
	issuer := root.Intermediate(t, "issuer")
	other := testpki.NewRoot(t, "other")
	// Only leaves must be P-256: an RSA root with a P-384 issuer is fine.
	rsaRoot := testpki.NewRootWithKey(t, "rsa root", rsaKey())
	p384Issuer := rsaRoot.IntermediateWithKey(t, "p384 issuer", p384Key(t))
	for _, tc := range []struct {
		name    string
		leaf    *testpki.Leaf
		roots   []*testpki.CA
		wantErr string
	}{
		{"valid", issuer.Leaf(t, id, testpki.LeafOpts{}), []*testpki.CA{root}, ""},
		{"valid with two roots", issuer.Leaf(t, id, testpki.LeafOpts{}), []*testpki.CA{other, root}, ""},
		{"untrusted root", issuer.Leaf(t, id, testpki.LeafOpts{}), []*testpki.CA{other}, "does not verify"},
		{"expired", issuer.Leaf(t, id, testpki.LeafOpts{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}), []*testpki.CA{root}, "does not verify"},
		{"CA leaf", issuer.Leaf(t, id, testpki.LeafOpts{IsCA: true}), []*testpki.CA{root}, "does not verify"},
		{"not a SPIFFE ID", issuer.Leaf(t, "https://example.test/x", testpki.LeafOpts{}), []*testpki.CA{root}, "not an SVID"},
		{"empty bundle", issuer.Leaf(t, id, testpki.LeafOpts{}), nil, "bundle"},
		{"RSA root and P-384 issuer", p384Issuer.Leaf(t, id, testpki.LeafOpts{}), []*testpki.CA{rsaRoot}, ""},
		{"RSA leaf", issuer.Leaf(t, id, testpki.LeafOpts{Key: rsaKey()}), []*testpki.CA{root},
			"own certificate's key is RSA 2048: SVIDs must use ECDSA P-256"},
		{"P-384 leaf", issuer.Leaf(t, id, testpki.LeafOpts{Key: p384Key(t)}), []*testpki.CA{root},
			"own certificate's key is ECDSA P-384: SVIDs must use ECDSA P-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.leaf.Write(t, t.TempDir(), tc.roots...)
			m, err := Load(Files(f))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if m.ID.String() != id || len(m.Bundle.X509Authorities()) != len(tc.roots) {
					t.Errorf("loaded %s with %d roots", m.ID, len(m.Bundle.X509Authorities()))
				}
				// Cross-check with go-spiffe directly, not only our wrapper.
				if _, _, err := x509svid.Verify(append([]*x509.Certificate{m.Cert.Leaf}, tc.leaf.Chain...), m.Bundle); err != nil {
					t.Errorf("go-spiffe rejects what Load accepted: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

// TestHandshake: the client config accepts only the expected server
// identity; the server config records the client's.
func TestHandshake(t *testing.T) {
	root := testpki.NewRoot(t, "root")
	issuer := root.Intermediate(t, "issuer")
	srvID, cliID := "spiffe://cluster.local/ns/b/sa/api", id
	src := func(id string) *Source {
		f := issuer.Leaf(t, id, testpki.LeafOpts{}).Write(t, t.TempDir(), root)
		s, err := NewSource(Files(f), nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	server, client := src(srvID), src(cliID)
	for _, tc := range []struct {
		name   string
		expect string
		ok     bool
	}{{"expected identity", srvID, true}, {"other identity", "spiffe://cluster.local/ns/b/sa/other", false}} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", server.ServerConfig())
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			peer := make(chan string, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				tc := c.(*tls.Conn)
				if tc.Handshake() != nil {
					peer <- ""
					return
				}
				p, _ := PeerID(tc.ConnectionState())
				peer <- p.String()
			}()
			raw, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c := tls.Client(raw, client.ClientConfig(spiffeid.RequireFromString(tc.expect), ALPNH2))
			err = c.Handshake()
			c.Close()
			if (err == nil) != tc.ok {
				t.Fatalf("handshake err = %v, want ok=%v", err, tc.ok)
			}
			if got := <-peer; tc.ok && got != cliID {
				t.Errorf("server saw client %q, want %q", got, cliID)
			}
			if tc.ok && c.ConnectionState().Version != tls.VersionTLS13 {
				t.Errorf("TLS version %x, want 1.3", c.ConnectionState().Version)
			}
		})
	}
}

// TestHandshakeRefusesPeerKey: a peer whose leaf is not ECDSA P-256 is
// refused even though a trusted CA signed it, by a client and by a server.
func TestHandshakeRefusesPeerKey(t *testing.T) {
	root := testpki.NewRoot(t, "root")
	issuer := root.Intermediate(t, "issuer")
	srvID := "spiffe://cluster.local/ns/b/sa/api"
	good := func(id string) *Source {
		s, err := NewSource(Files(issuer.Leaf(t, id, testpki.LeafOpts{}).Write(t, t.TempDir(), root)), nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// odd serves a leaf for key, installed with Set, which does not check
	// it, as a peer running other software would present it.
	odd := func(id string, key crypto.Signer) *Source {
		l := issuer.Leaf(t, id, testpki.LeafOpts{Key: key})
		b, err := ParseBundle(spiffeid.RequireTrustDomainFromString("cluster.local"), pemRoots(root))
		if err != nil {
			t.Fatal(err)
		}
		s := NewMemorySource(nil)
		s.Set(&Material{Cert: &tls.Certificate{Certificate: chainDER(l), PrivateKey: l.Signer, Leaf: l.Cert}, ID: spiffeid.RequireFromString(id), Bundle: b})
		return s
	}
	goodSrv, goodCli := good(srvID), good(id)
	for _, tc := range []struct {
		name    string
		key     crypto.Signer
		wantErr string
	}{
		{"ECDSA P-256", nil, ""},
		{"ECDSA P-384", p384Key(t), "peer certificate's key is ECDSA P-384: SVIDs must use ECDSA P-256"},
		{"RSA 2048", rsaKey(), "peer certificate's key is RSA 2048: SVIDs must use ECDSA P-256"},
	} {
		t.Run(tc.name+"/client refuses server", func(t *testing.T) {
			cliErr, srvErr := handshake(t, goodCli.ClientConfig(spiffeid.RequireFromString(srvID), ALPNH2), odd(srvID, tc.key).ServerConfig())
			checkRefusal(t, cliErr, srvErr, tc.wantErr)
		})
		t.Run(tc.name+"/server refuses client", func(t *testing.T) {
			cliErr, srvErr := handshake(t, odd(id, tc.key).ClientConfig(spiffeid.RequireFromString(srvID), ALPNH2), goodSrv.ServerConfig())
			checkRefusal(t, srvErr, cliErr, tc.wantErr)
		})
	}
}

// checkRefusal checks that the side that must refuse did so with wantErr
// (or that both succeeded when wantErr is empty).
func checkRefusal(t *testing.T, refuserErr, otherErr error, wantErr string) {
	t.Helper()
	if wantErr == "" {
		if refuserErr != nil || otherErr != nil {
			t.Fatalf("handshake failed: %v / %v", refuserErr, otherErr)
		}
		return
	}
	if refuserErr == nil || !strings.Contains(refuserErr.Error(), wantErr) {
		t.Fatalf("err = %v, want it to mention %q", refuserErr, wantErr)
	}
}

// handshake runs one handshake over loopback TCP and returns each side's
// error. The client waits for the server's verdict before closing: in TLS
// 1.3 it finishes before the server has checked its certificate.
func handshake(t *testing.T, cli, srv *tls.Config) (cliErr, srvErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- tls.Server(c, srv).Handshake()
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	cliErr = tls.Client(raw, cli).Handshake()
	return cliErr, <-done
}

// TestReloadKeepsPrevious: a missing file keeps the last good identity.
func TestReloadKeepsPrevious(t *testing.T) {
	root := testpki.NewRoot(t, "root")
	f := root.Leaf(t, id, testpki.LeafOpts{}).Write(t, t.TempDir(), root)
	s, err := NewSource(Files(f), nil)
	if err != nil {
		t.Fatal(err)
	}
	before := s.Current()
	os.Remove(f.Key)
	if _, err := s.Reload(); err == nil {
		t.Fatal("reload without a key succeeded")
	}
	if s.Current() != before {
		t.Fatal("identity replaced by a failed reload")
	}
}
