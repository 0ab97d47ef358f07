package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
)

// Audience is the audience a proxy's projected ServiceAccount token must carry,
// so that a token meant for another system cannot buy a mesh identity.
const Audience = "weft"

// ErrUnauthenticated is returned by an Authenticator for a token it does not
// accept (invalid, expired, wrong audience, not a ServiceAccount).
var ErrUnauthenticated = errors.New("token not accepted")

// ServiceAccount is who a token proves its bearer is.
type ServiceAccount struct{ Namespace, Name string }

// Authenticator checks a ServiceAccount token.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (ServiceAccount, error)
}

// IssuerSource returns the current issuer, or nil before one is loaded.
type IssuerSource interface {
	Current() *Issuer
}

// Service implements the Identity gRPC service.
type Service struct {
	meshapiv1.UnimplementedIdentityServer

	TrustDomain spiffeid.TrustDomain
	Auth        Authenticator
	Issuers     IssuerSource
	// LeafTTL is the lifetime of workload certificates (24h by default).
	// SetLeafTTL changes it while the service runs.
	LeafTTL time.Duration
	// leafTTL, when not zero, is what SetLeafTTL last set; it wins over
	// LeafTTL.
	leafTTL atomic.Int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Signed, if set, is told of every certificate issued (metrics, logs).
	Signed func(id spiffeid.ID, notAfter time.Time)
}

// SetLeafTTL sets the lifetime of the certificates issued from now on
// (spec.identity.leafLifetime of the MeshControlPlane); 0 restores LeafTTL.
func (s *Service) SetLeafTTL(d time.Duration) { s.leafTTL.Store(int64(d)) }

func (s *Service) ttl() time.Duration {
	if d := time.Duration(s.leafTTL.Load()); d > 0 {
		return d
	}
	if s.LeafTTL > 0 {
		return s.LeafTTL
	}
	return 24 * time.Hour
}

// maxCSRSize bounds what is parsed before anything is authenticated.
const maxCSRSize = 16 << 10

// Certify authenticates the token first (so an anonymous caller learns nothing
// about the CA), then checks that the CSR asks for exactly the identity the
// token proves, then signs.
func (s *Service) Certify(ctx context.Context, req *meshapiv1.CertifyRequest) (*meshapiv1.CertifyResponse, error) {
	if req.GetToken() == "" {
		return nil, status.Error(codes.Unauthenticated, "no ServiceAccount token: mount a projected token with audience \"weft\"")
	}
	sa, err := s.Auth.Authenticate(ctx, req.GetToken())
	if err != nil {
		if errors.Is(err, ErrUnauthenticated) {
			return nil, status.Errorf(codes.Unauthenticated, "ServiceAccount token refused: %v", err)
		}
		return nil, status.Errorf(codes.Unavailable, "cannot check the token now: %v", err)
	}
	want, err := WorkloadID(s.TrustDomain, sa.Namespace, sa.Name)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	if len(req.GetCsr()) == 0 || len(req.GetCsr()) > maxCSRSize {
		return nil, status.Errorf(codes.InvalidArgument, "csr must be a DER PKCS#10 request of at most %d bytes", maxCSRSize)
	}
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr is not a PKCS#10 request: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr signature is invalid: %v", err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, status.Errorf(codes.InvalidArgument, "unsupported key type %s: only ECDSA P-256 keys are certified", keyName(csr))
	}
	if len(csr.DNSNames)+len(csr.EmailAddresses)+len(csr.IPAddresses) > 0 {
		return nil, status.Error(codes.InvalidArgument, "csr must carry only a SPIFFE URI SAN (no DNS, IP or email SANs)")
	}
	if len(csr.URIs) != 1 {
		return nil, status.Errorf(codes.InvalidArgument, "csr must carry exactly one URI SAN, the SPIFFE ID %s", want)
	}
	if got := csr.URIs[0].String(); got != want.String() {
		return nil, status.Errorf(codes.PermissionDenied, "csr asks for %s but the token proves %s", got, want)
	}
	iss := s.Issuers.Current()
	if iss == nil {
		return nil, status.Error(codes.Unavailable, "no issuer certificate is loaded yet")
	}
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	ttl := s.ttl()
	chain, notAfter, err := iss.Sign(pub, LeafTemplate{ID: want, TTL: ttl, Now: now})
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "cannot sign: %v", err)
	}
	if s.Signed != nil {
		s.Signed(want, notAfter)
	}
	return &meshapiv1.CertifyResponse{
		CertChain:   chain,
		TrustBundle: iss.BundlePEM(),
		SpiffeId:    want.String(),
		NotAfter:    notAfter.Unix(),
	}, nil
}

// WorkloadID is a ServiceAccount's SPIFFE ID:
// spiffe://<trust-domain>/ns/<namespace>/sa/<name>.
func WorkloadID(td spiffeid.TrustDomain, namespace, name string) (spiffeid.ID, error) {
	if namespace == "" || name == "" || strings.Contains(namespace+name, "/") {
		return spiffeid.ID{}, fmt.Errorf("invalid ServiceAccount %q/%q", namespace, name)
	}
	return spiffeid.FromSegments(td, "ns", namespace, "sa", name)
}

func keyName(csr *x509.CertificateRequest) string {
	if k, ok := csr.PublicKey.(*ecdsa.PublicKey); ok {
		return "ECDSA " + k.Curve.Params().Name
	}
	return csr.PublicKeyAlgorithm.String()
}
