package webhook

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "webhook test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

// serving issues a serving certificate for 127.0.0.1 and returns it and its
// key as PEM.
func (ca *testCA) serving(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "weft-controlplane-stable.weft-system.svc"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// secretVolume lays files out as the kubelet does for a Secret volume:
// the visible names are symlinks through ..data, and an update swaps ..data
// to a new timestamped directory in one rename.
type secretVolume struct {
	dir string
	gen int
}

func (v *secretVolume) write(t *testing.T, files map[string][]byte) {
	t.Helper()
	v.gen++
	data := filepath.Join(v.dir, "..data_"+string(rune('a'+v.gen)))
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(data, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(v.dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(data), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func TestCertReload(t *testing.T) {
	oldCA, newCA := newCA(t), newCA(t)
	vol := &secretVolume{dir: t.TempDir()}
	crt1, key1 := oldCA.serving(t, 101)
	vol.write(t, map[string][]byte{CertFile: crt1, KeyFile: key1})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := make(chan net.Addr, 1)
	srv := &Server{Addr: "127.0.0.1:0", CertDir: vol.dir, Handler: fakeHandler(t), Log: logr.Discard(),
		Listening: func(a net.Addr) { addr <- a }}
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	var url string
	select {
	case a := <-addr:
		url = "https://" + a.String() + "/healthz"
	case err := <-done:
		t.Fatalf("server did not start: %v", err)
	}

	roots := x509.NewCertPool()
	roots.AddCert(oldCA.cert)
	roots.AddCert(newCA.cert)
	// servedSerial makes a new connection, so a new handshake, each time.
	servedSerial := func() int64 {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: roots}}}
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
	}

	if got := servedSerial(); got != 101 {
		t.Fatalf("serving certificate %d, want 101", got)
	}
	crt2, key2 := newCA.serving(t, 202)
	vol.write(t, map[string][]byte{CertFile: crt2, KeyFile: key2})
	if got := servedSerial(); got != 202 {
		t.Errorf("after rotation: serving certificate %d, want 202", got)
	}

	// A broken update (a key from another pair) keeps the last good
	// certificate, and the next good one is picked up.
	crt3, _ := newCA.serving(t, 303)
	vol.write(t, map[string][]byte{CertFile: crt3, KeyFile: key2})
	if got := servedSerial(); got != 202 {
		t.Errorf("after a mismatched update: serving certificate %d, want 202 kept", got)
	}
	crt4, key4 := newCA.serving(t, 404)
	vol.write(t, map[string][]byte{CertFile: crt4, KeyFile: key4})
	if got := servedSerial(); got != 404 {
		t.Errorf("after a good update: serving certificate %d, want 404", got)
	}

	// Files rewritten in place (not through a Secret volume) count too.
	crt5, key5 := oldCA.serving(t, 505)
	for name, b := range map[string][]byte{CertFile: crt5, KeyFile: key5} {
		target, err := filepath.EvalSymlinks(filepath.Join(vol.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(target, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := servedSerial(); got != 505 {
		t.Errorf("after an in-place rewrite: serving certificate %d, want 505", got)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Start() after cancel = %v", err)
	}
}

func TestCertReloaderNeedsACertificate(t *testing.T) {
	dir := t.TempDir()
	if _, err := NewCertReloader(dir, logr.Discard()); err == nil || !strings.Contains(err.Error(), "tls.crt") {
		t.Errorf("NewCertReloader(empty dir) error = %v", err)
	}
	os.WriteFile(filepath.Join(dir, CertFile), []byte("junk"), 0o600)
	os.WriteFile(filepath.Join(dir, KeyFile), []byte("junk"), 0o600)
	if _, err := NewCertReloader(dir, logr.Discard()); err == nil || !strings.Contains(err.Error(), "loading the serving certificate") {
		t.Errorf("NewCertReloader(junk) error = %v", err)
	}
}
