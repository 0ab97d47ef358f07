package cpclient

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/identity"
	"github.com/weftmesh/weft/proxy/metrics"
)

// The environment the injector gives the proxy container.
const (
	EnvControlPlaneAddr = "WEFT_CONTROL_PLANE_ADDR"
	EnvTrustDomain      = "WEFT_TRUST_DOMAIN"
	EnvTrustAnchors     = "WEFT_TRUST_ANCHORS"
	EnvPodName          = "WEFT_POD_NAME"
	EnvPodNamespace     = "WEFT_POD_NAMESPACE"
	EnvServiceAccount   = "WEFT_SERVICE_ACCOUNT"
	EnvTokenPath        = "WEFT_TOKEN_PATH"
)

// Applier installs a decoded snapshot; *sidecar.Proxy is one. An error
// means the snapshot was refused and the previous one is still in use.
type Applier interface {
	Apply(*meshconfig.Snapshot) error
}

// Config configures a Client.
type Config struct {
	// Addr is the control plane's host:port; the host is also the name its
	// serving certificate must carry.
	Addr string
	// TrustDomain, PodNamespace and ServiceAccount make the SPIFFE ID asked
	// for: spiffe://<TrustDomain>/ns/<PodNamespace>/sa/<ServiceAccount>.
	TrustDomain, PodNamespace, ServiceAccount string
	// PodName is sent in Hello.
	PodName string
	// TokenPath is the projected ServiceAccount token, read on every
	// certificate request because the kubelet rotates it.
	TokenPath string
	// TrustAnchors (PEM) verify the control plane's serving certificate,
	// together with the latest trust bundle received.
	TrustAnchors []byte
	// ProxyVersion is reported in Hello (Version when empty).
	ProxyVersion string

	// Identity receives the certificate and trust bundle.
	Identity *identity.Source
	// Proxy receives the snapshots.
	Proxy Applier
	// Metrics may be nil.
	Metrics *metrics.ControlPlane
	// Log is slog.Default() when nil.
	Log *slog.Logger
	// Clock schedules renewals and retries (the real clock when nil).
	Clock Clock
	// MinBackoff and MaxBackoff bound the delay between retries (500ms and
	// 30s when zero).
	MinBackoff, MaxBackoff time.Duration
	// RequestTimeout bounds one certificate request (30s when zero).
	RequestTimeout time.Duration
	// Mark is set as SO_MARK on the connections to the control plane (0:
	// none); see package sockmark.
	Mark uint32
}

// FromEnv fills the pod's settings from the injector's environment; the
// caller sets Identity, Proxy and the rest.
func FromEnv(getenv func(string) string) Config {
	return Config{
		Addr:           getenv(EnvControlPlaneAddr),
		TrustDomain:    getenv(EnvTrustDomain),
		PodName:        getenv(EnvPodName),
		PodNamespace:   getenv(EnvPodNamespace),
		ServiceAccount: getenv(EnvServiceAccount),
		TokenPath:      getenv(EnvTokenPath),
		TrustAnchors:   []byte(getenv(EnvTrustAnchors)),
	}
}

// settings is a checked Config.
type settings struct {
	Config
	id         spiffeid.ID
	serverName string
	anchors    []*x509.Certificate
}

func (c Config) check() (*settings, error) {
	var errs []error
	s := &settings{Config: c}
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil || host == "" || port == "" {
		errs = append(errs, fmt.Errorf("control-plane address %q (%s) must be host:port", c.Addr, EnvControlPlaneAddr))
	}
	s.serverName = host
	td, err := spiffeid.TrustDomainFromString(c.TrustDomain)
	if err != nil {
		errs = append(errs, fmt.Errorf("trust domain %q (%s): %w", c.TrustDomain, EnvTrustDomain, err))
	}
	for _, f := range []struct{ name, env, v string }{
		{"pod namespace", EnvPodNamespace, c.PodNamespace},
		{"service account", EnvServiceAccount, c.ServiceAccount},
		{"pod name", EnvPodName, c.PodName},
	} {
		if f.v == "" || strings.Contains(f.v, "/") {
			errs = append(errs, fmt.Errorf("%s %q (%s) must be a non-empty name", f.name, f.v, f.env))
		}
	}
	if err == nil && c.PodNamespace != "" && c.ServiceAccount != "" {
		if s.id, err = spiffeid.FromSegments(td, "ns", c.PodNamespace, "sa", c.ServiceAccount); err != nil {
			errs = append(errs, fmt.Errorf("SPIFFE ID for %s/%s: %w", c.PodNamespace, c.ServiceAccount, err))
		}
	}
	if c.TokenPath == "" {
		errs = append(errs, fmt.Errorf("token path (%s) is empty", EnvTokenPath))
	}
	if s.anchors, err = parseCerts(c.TrustAnchors); err != nil {
		errs = append(errs, fmt.Errorf("trust anchors (%s): %w", EnvTrustAnchors, err))
	}
	if c.Identity == nil {
		errs = append(errs, errors.New("no identity source"))
	}
	if c.Proxy == nil {
		errs = append(errs, errors.New("no proxy to apply snapshots to"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if s.ProxyVersion == "" {
		s.ProxyVersion = Version
	}
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.Clock == nil {
		s.Clock = realClock{}
	}
	if s.MinBackoff <= 0 {
		s.MinBackoff = 500 * time.Millisecond
	}
	if s.MaxBackoff <= 0 {
		s.MaxBackoff = 30 * time.Second
	}
	s.MaxBackoff = max(s.MaxBackoff, s.MinBackoff)
	if s.RequestTimeout <= 0 {
		s.RequestTimeout = 30 * time.Second
	}
	return s, nil
}
