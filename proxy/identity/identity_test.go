package identity

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/proxy/internal/testpki"
)

const id = "spiffe://cluster.local/ns/a/sa/web"

func TestLoad(t *testing.T) {
	root := testpki.NewRoot(t, "root")
	issuer := root.Intermediate(t, "issuer")
	other := testpki.NewRoot(t, "other")
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
