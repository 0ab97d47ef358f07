package webhook

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Names of the serving certificate's files in its directory, as a
// kubernetes.io/tls Secret mounts them.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)

// CertReloader serves the certificate in a directory and picks up a new one
// at the next TLS handshake after the files change. Checking on the
// handshake (two stats) rather than with a file watcher needs no goroutine
// and sees Secret volume updates, which swap a symlink rather than write the
// files. A change that does not load (a key that does not match yet, a
// half-written file) is logged and the previous certificate kept.
type CertReloader struct {
	certPath, keyPath string
	log               logr.Logger

	mu     sync.Mutex
	cert   *tls.Certificate
	loaded [2]os.FileInfo // what cert was loaded from
	failed [2]os.FileInfo // the last change that did not load
}

// NewCertReloader loads dir/tls.crt and dir/tls.key; it fails if they do not
// load now, since a webhook without a certificate cannot serve at all.
func NewCertReloader(dir string, log logr.Logger) (*CertReloader, error) {
	r := &CertReloader{certPath: filepath.Join(dir, CertFile), keyPath: filepath.Join(dir, KeyFile), log: log}
	stamp, err := r.stat()
	if err != nil {
		return nil, err
	}
	cert, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert, r.loaded = cert, stamp
	return r, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamp, err := r.stat()
	if err != nil || sameStamp(stamp, r.loaded) || sameStamp(stamp, r.failed) {
		if err != nil {
			r.log.V(1).Info("Cannot check the serving certificate; keeping the current one", "error", err.Error())
		}
		return r.cert, nil
	}
	cert, err := r.load()
	if err != nil {
		r.failed = stamp
		r.log.Error(err, "New serving certificate does not load; keeping the current one", "dir", filepath.Dir(r.certPath))
		return r.cert, nil
	}
	r.cert, r.loaded, r.failed = cert, stamp, [2]os.FileInfo{}
	notAfter := ""
	if cert.Leaf != nil {
		notAfter = cert.Leaf.NotAfter.Format(time.RFC3339)
	}
	r.log.Info("Reloaded the serving certificate", "dir", filepath.Dir(r.certPath), "notAfter", notAfter)
	return cert, nil
}

// Certificate returns the certificate currently served.
func (r *CertReloader) Certificate() *tls.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cert
}

func (r *CertReloader) stat() ([2]os.FileInfo, error) {
	var out [2]os.FileInfo
	for i, p := range []string{r.certPath, r.keyPath} {
		fi, err := os.Stat(p)
		if err != nil {
			return out, fmt.Errorf("serving certificate: %w", err)
		}
		out[i] = fi
	}
	return out, nil
}

func (r *CertReloader) load() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(r.certPath, r.keyPath)
	if err != nil {
		return nil, fmt.Errorf("loading the serving certificate from %s: %w", filepath.Dir(r.certPath), err)
	}
	return &cert, nil
}

func sameStamp(a, b [2]os.FileInfo) bool {
	for i := range a {
		if a[i] == nil || b[i] == nil || !os.SameFile(a[i], b[i]) ||
			!a[i].ModTime().Equal(b[i].ModTime()) || a[i].Size() != b[i].Size() {
			return false
		}
	}
	return true
}
