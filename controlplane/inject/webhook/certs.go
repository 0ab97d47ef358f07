package webhook

import (
	"bytes"
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
// at the next TLS handshake after the files change. It reads the two files
// on every handshake and compares them with what it loaded: handshakes are
// rare (the API server keeps its connections), and unlike a file watcher or
// modification times this needs no goroutine, sees Secret volume updates
// (which swap a symlink rather than write the files) and cannot miss a
// rewrite within one timestamp tick. A change that does not load (a key that
// does not match yet, a half-written file) is logged once and the previous
// certificate kept.
type CertReloader struct {
	certPath, keyPath string
	log               logr.Logger

	mu     sync.Mutex
	cert   *tls.Certificate
	loaded [2][]byte // the PEM cert was loaded from
	failed [2][]byte // the last change that did not load
}

// NewCertReloader loads dir/tls.crt and dir/tls.key; it fails if they do not
// load now, since a webhook without a certificate cannot serve at all.
func NewCertReloader(dir string, log logr.Logger) (*CertReloader, error) {
	r := &CertReloader{certPath: filepath.Join(dir, CertFile), keyPath: filepath.Join(dir, KeyFile), log: log}
	files, err := r.read()
	if err != nil {
		return nil, err
	}
	cert, err := load(files)
	if err != nil {
		return nil, fmt.Errorf("loading the serving certificate from %s: %w", dir, err)
	}
	r.cert, r.loaded = cert, files
	return r, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	files, err := r.read()
	if err != nil {
		// Mid-update, a file may be missing for an instant.
		r.log.V(1).Info("Cannot read the serving certificate; keeping the current one", "error", err.Error())
		return r.cert, nil
	}
	if same(files, r.loaded) || same(files, r.failed) {
		return r.cert, nil
	}
	cert, err := load(files)
	if err != nil {
		r.failed = files
		r.log.Error(err, "New serving certificate does not load; keeping the current one", "dir", filepath.Dir(r.certPath))
		return r.cert, nil
	}
	r.cert, r.loaded, r.failed = cert, files, [2][]byte{}
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

func (r *CertReloader) read() ([2][]byte, error) {
	var out [2][]byte
	for i, p := range []string{r.certPath, r.keyPath} {
		b, err := os.ReadFile(p)
		if err != nil {
			return out, fmt.Errorf("serving certificate: %w", err)
		}
		out[i] = b
	}
	return out, nil
}

func load(files [2][]byte) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(files[0], files[1])
	if err != nil {
		return nil, err
	}
	return &cert, nil
}

func same(a, b [2][]byte) bool {
	return b[0] != nil && bytes.Equal(a[0], b[0]) && bytes.Equal(a[1], b[1])
}
