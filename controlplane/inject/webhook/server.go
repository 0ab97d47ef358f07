package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
)

// Server serves Handler at Path over TLS, with the certificate from CertDir
// reloaded when it rotates. It is a controller-runtime manager Runnable.
type Server struct {
	// Addr to listen on, such as ":9443".
	Addr    string
	CertDir string
	Handler http.Handler
	Log     logr.Logger
	// Listening, if set, receives the bound address once the server
	// accepts connections (tests listen on port 0).
	Listening func(net.Addr)
}

// NeedLeaderElection: every replica admits pods.
func (s *Server) NeedLeaderElection() bool { return false }

// Start serves until ctx is done, then drains for up to 10 seconds.
func (s *Server) Start(ctx context.Context) error {
	certs, err := NewCertReloader(s.CertDir, s.Log)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(Path, s.Handler)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	srv := &http.Server{
		Handler: mux,
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: certs.GetCertificate,
		},
		// The API server gives up after the webhook's timeoutSeconds (at
		// most 10s); nothing useful happens after that.
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("webhook server: %w", err)
	}
	s.Log.Info("Serving the injector webhook", "addr", ln.Addr().String(), "path", Path, "certDir", s.CertDir)
	if s.Listening != nil {
		s.Listening(ln.Addr())
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-done:
		return fmt.Errorf("webhook server: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	if serveErr := <-done; !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
		err = serveErr
	}
	return err
}
