package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/weftmesh/weft/proxy/internal/testpki"
)

func pemRoots(cas ...*testpki.CA) []byte {
	var b []byte
	for _, c := range cas {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})...)
	}
	return b
}

func chainDER(l *testpki.Leaf) [][]byte {
	out := [][]byte{l.Cert.Raw}
	for _, c := range l.Chain {
		out = append(out, c.Raw)
	}
	return out
}

func TestFromDER(t *testing.T) {
	root := testpki.NewRoot(t, "root")
	issuer := root.Intermediate(t, "issuer")
	other := testpki.NewRoot(t, "other")
	leaf := issuer.Leaf(t, id, testpki.LeafOpts{})
	strange, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaLeaf := issuer.Leaf(t, id, testpki.LeafOpts{Key: rsaKey()})
	p384Leaf := issuer.Leaf(t, id, testpki.LeafOpts{Key: p384Key(t)})
	for _, tc := range []struct {
		name    string
		chain   [][]byte
		key     crypto.Signer
		bundle  []byte
		wantErr string
	}{
		{"valid", chainDER(leaf), leaf.Key, pemRoots(root), ""},
		{"empty chain", nil, leaf.Key, pemRoots(root), "empty"},
		{"garbage", [][]byte{[]byte("junk")}, leaf.Key, pemRoots(root), "certificate 0"},
		{"someone else's key", chainDER(leaf), strange, pemRoots(root), "not for this proxy's key"},
		{"untrusted", chainDER(leaf), leaf.Key, pemRoots(other), "does not verify"},
		{"no bundle", chainDER(leaf), leaf.Key, nil, "bundle"},
		{"RSA leaf", chainDER(rsaLeaf), rsaLeaf.Signer, pemRoots(root), "own certificate's key is RSA 2048: SVIDs must use ECDSA P-256"},
		{"P-384 leaf", chainDER(p384Leaf), p384Leaf.Signer, pemRoots(root), "own certificate's key is ECDSA P-384: SVIDs must use ECDSA P-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := FromDER(tc.chain, tc.key, tc.bundle)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if m.ID.String() != id || m.Cert.Leaf.SerialNumber.Cmp(leaf.Cert.SerialNumber) != 0 {
					t.Errorf("material for %s serial %s", m.ID, m.Cert.Leaf.SerialNumber)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestSetBundle(t *testing.T) {
	root := testpki.NewRoot(t, "root")
	issuer := root.Intermediate(t, "issuer")
	next := testpki.NewRoot(t, "next")
	leaf := issuer.Leaf(t, id, testpki.LeafOpts{})
	s := NewMemorySource(nil)
	if _, _, err := s.SetBundle(pemRoots(root)); err == nil {
		t.Fatal("SetBundle without an identity succeeded")
	}
	if ok, err := s.Reload(); ok || err != nil {
		t.Fatalf("Reload of a memory source = %v, %v", ok, err)
	}
	m, err := FromDER(chainDER(leaf), leaf.Key, pemRoots(root))
	if err != nil {
		t.Fatal(err)
	}
	s.Set(m)
	for _, step := range []struct {
		name           string
		bundle         []byte
		changed, ownOK bool
		roots          int
		wantErr        string
	}{
		{"same", pemRoots(root), false, true, 1, ""},
		{"add a root", pemRoots(root, next), true, true, 2, ""},
		{"garbage keeps the old", []byte("junk"), false, false, 2, "bundle"},
		{"empty keeps the old", nil, false, false, 2, "no certificate"},
		{"retire our root", pemRoots(next), true, false, 1, ""},
	} {
		changed, ownOK, err := s.SetBundle(step.bundle)
		if step.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), step.wantErr) {
				t.Fatalf("%s: err = %v, want %q", step.name, err, step.wantErr)
			}
		} else if err != nil || changed != step.changed || ownOK != step.ownOK {
			t.Fatalf("%s: changed=%v ownVerifies=%v err=%v, want %v %v", step.name, changed, ownOK, err, step.changed, step.ownOK)
		}
		cur := s.Current()
		if n := len(cur.Bundle.X509Authorities()); n != step.roots {
			t.Fatalf("%s: %d roots, want %d", step.name, n, step.roots)
		}
		if cur.Cert != m.Cert {
			t.Fatalf("%s: the certificate changed", step.name)
		}
	}
	if b := s.BundlePEM(); !strings.Contains(string(b), "CERTIFICATE") {
		t.Errorf("BundlePEM = %q", b)
	}
}
