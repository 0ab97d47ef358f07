package configserver

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
)

// ServerTLS is the TLS configuration of the control plane's gRPC port. The
// serving certificate and the trusted roots are looked up per handshake, so
// an issuer renewal or a trust-anchor rotation needs no restart. A client
// certificate is optional at the TLS layer (Identity.Certify is how a proxy
// gets its first one) but verified when presented; Config.Stream refuses a
// stream without one.
func ServerTLS(cert func() *tls.Certificate, roots func() *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := cert()
			if c == nil {
				return nil, fmt.Errorf("no serving certificate yet: the issuer is not loaded")
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*c},
				ClientAuth:   tls.VerifyClientCertIfGiven,
				ClientCAs:    roots(),
				// gRPC insists on ALPN h2; a config returned here replaces the
				// one grpc's credentials filled in.
				NextProtos: []string{"h2"},
			}, nil
		},
	}
}
