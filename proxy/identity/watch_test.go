package identity

import (
	"bytes"
	"context"
	"encoding/pem"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/proxy/internal/testpki"
)

func serves(s *Source, l *testpki.Leaf) bool {
	m := s.Current()
	return m != nil && m.Cert.Leaf.SerialNumber.Cmp(l.Cert.SerialNumber) == 0
}

// TestReloadSeesSameSizeRewrite: a renewal of exactly the same length with
// the old mtime kept (a copy that preserves times, or a coarse clock) is
// picked up.
func TestReloadSeesSameSizeRewrite(t *testing.T) {
	root := testpki.NewRoot(t, "root")
	first := root.Leaf(t, id, testpki.LeafOpts{})
	f := first.Write(t, t.TempDir(), root)
	s, err := NewSource(Files(f), nil)
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(f.Cert)
	if err != nil {
		t.Fatal(err)
	}
	// Same key, so that only the certificate file changes; ECDSA signatures
	// vary in length, so try until one matches.
	var next *testpki.Leaf
	var nextPEM []byte
	for range 100 {
		l := root.Leaf(t, id, testpki.LeafOpts{Key: first.Key})
		if b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: l.Cert.Raw}); int64(len(b)) == before.Size() {
			next, nextPEM = l, b
			break
		}
	}
	if next == nil {
		t.Fatal("no certificate of the same length in 100 tries")
	}
	if err := os.WriteFile(f.Cert, nextPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(f.Cert, time.Time{}, before.ModTime()); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(f.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("setup: size %d→%d, mtime %v→%v; want both unchanged", before.Size(), after.Size(), before.ModTime(), after.ModTime())
	}
	if changed, err := s.Reload(); !changed || err != nil {
		t.Fatalf("Reload = %v, %v; want the new certificate", changed, err)
	}
	if !serves(s, next) {
		t.Fatalf("serving serial %s, want %s", s.Current().Cert.Leaf.SerialNumber, next.Cert.SerialNumber)
	}
	if changed, err := s.Reload(); changed || err != nil {
		t.Fatalf("second Reload of unchanged files = %v, %v; want no change", changed, err)
	}
}

// logSink collects a Source's log so that a test can wait for a failed reload.
type logSink struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const reloadFailed = "Identity reload failed"

// watch starts s.Watch on f every 20ms until the test ends.
func watch(t *testing.T, f testpki.Files) (*Source, *logSink) {
	t.Helper()
	sink := &logSink{}
	s, err := NewSource(Files(f), slog.New(slog.NewTextHandler(sink, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Watch(ctx, 20*time.Millisecond)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return s, sink
}

// waitFor polls cond until it holds; the deadline is a safety net for a
// broken watch, generous for a loaded machine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWatch: a rotation written as a secret volume update is served without
// a call to Reload.
func TestWatch(t *testing.T) {
	root := testpki.NewRoot(t, "root")
	issuer := root.Intermediate(t, "issuer")
	next := testpki.NewRoot(t, "next root")
	dir := t.TempDir()
	first := issuer.Leaf(t, id, testpki.LeafOpts{})
	s, _ := watch(t, first.Write(t, dir, root))
	if !serves(s, first) {
		t.Fatal("first certificate not served")
	}
	second := issuer.Leaf(t, id, testpki.LeafOpts{})
	second.Write(t, dir, root, next)
	waitFor(t, "the second certificate and both roots are served", func() bool {
		return serves(s, second) && len(s.Current().Bundle.X509Authorities()) == 2
	})
}

// TestWatchKeepsPrevious: broken files are refused (and logged) while the
// previous identity stays in use, and the next good files are served.
func TestWatchKeepsPrevious(t *testing.T) {
	root := testpki.NewRoot(t, "root")
	issuer := root.Intermediate(t, "issuer")
	for _, tc := range []struct {
		name    string
		breakIt func(t *testing.T, f testpki.Files)
		wantErr string
	}{
		{"key of another certificate", func(t *testing.T, f testpki.Files) {
			testpki.WriteAtomic(t, f.Key, issuer.Leaf(t, id, testpki.LeafOpts{}).KeyPEM(t))
		}, "private key does not match public key"},
		{"half-written certificate", func(t *testing.T, f testpki.Files) {
			b, err := os.ReadFile(f.Cert)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f.Cert, b[:len(b)/2], 0o600); err != nil {
				t.Fatal(err)
			}
		}, "certificate and key"},
		{"bundle removed", func(t *testing.T, f testpki.Files) {
			if err := os.Remove(f.Bundle); err != nil {
				t.Fatal(err)
			}
		}, "bundle.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			first := issuer.Leaf(t, id, testpki.LeafOpts{})
			f := first.Write(t, dir, root)
			s, log := watch(t, f)
			before := s.Current()
			if strings.Contains(log.String(), reloadFailed) {
				t.Fatalf("reload failed before the files were broken:\n%s", log)
			}

			tc.breakIt(t, f)
			waitFor(t, "the watcher refuses the broken files", func() bool { return strings.Contains(log.String(), reloadFailed) })
			if got := log.String(); !strings.Contains(got, tc.wantErr) {
				t.Errorf("log does not mention %q:\n%s", tc.wantErr, got)
			}
			if s.Current() != before {
				t.Fatal("broken files replaced the identity in use")
			}

			good := issuer.Leaf(t, id, testpki.LeafOpts{})
			good.Write(t, dir, root)
			waitFor(t, "the next good certificate is served", func() bool { return serves(s, good) })
		})
	}
}
