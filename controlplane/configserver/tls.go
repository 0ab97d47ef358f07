package configserver

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync/atomic"
)

// ServerTLS is the TLS configuration of the control plane's gRPC port. The
// serving certificate and the trusted roots are looked up per handshake, so
// an issuer renewal or a trust-anchor rotation needs no restart. A client
// certificate is optional at the TLS layer (Identity.Certify is how a proxy
// gets its first one) but verified when presented; Config.Stream refuses a
// stream without one.
func ServerTLS(cert func() *tls.Certificate, roots func() *x509.CertPool) *tls.Config {
	// Every connection keeps the configuration it was accepted with: one
	// is shared while the certificate and roots stay the same, rather than
	// a copy per proxy.
	var last atomic.Pointer[perClient]
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c, r := cert(), roots()
			if c == nil {
				return nil, fmt.Errorf("no serving certificate yet: the issuer is not loaded")
			}
			if p := last.Load(); p != nil && p.cert == c && p.roots == r {
				return p.config, nil
			}
			p := &perClient{cert: c, roots: r, config: &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*c},
				ClientAuth:   tls.VerifyClientCertIfGiven,
				ClientCAs:    r,
				// gRPC insists on ALPN h2; a config returned here replaces the
				// one grpc's credentials filled in.
				NextProtos: []string{"h2"},
			}}
			last.Store(p)
			return p.config, nil
		},
	}
}

// perClient is the configuration handed to connections for one
// certificate and set of roots.
type perClient struct {
	cert   *tls.Certificate
	roots  *x509.CertPool
	config *tls.Config
}
