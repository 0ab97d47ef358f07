package controllers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"time"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/identity"
)

// webhookCertLifetime: the injector's serving certificate is renewed at 2/3
// of it; the control plane reads it from its mounted Secret.
const webhookCertLifetime = 30 * 24 * time.Hour

// certObservation is the state of the mesh's certificates.
type certObservation struct {
	Ready           bool
	Message         string
	AnchorExpiry    time.Time
	IssuerExpiry    time.Time
	WebhookExpiry   time.Time
	Anchors         int
	Bundle          []byte
	RotatingAnchors bool
	// Expiring explains a certificate close to expiry that is not being
	// renewed.
	Expiring string
}

// reconcileCertificates makes sure the trust anchor (built-in CA), the issuer
// and the webhook serving certificate exist, are valid and not due for
// renewal. It returns the earliest renewal time. A certificate that cannot be
// obtained (cert-manager has not issued it yet) is reported in obs.certs and
// is not an error.
func (r *MeshControlPlaneReconciler) reconcileCertificates(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane, obs *observation, revisions []string) (time.Time, error) {
	var (
		iss     *identity.Issuer
		renewal time.Time
		err     error
	)
	if mesh.Spec.Identity.CertManager != nil {
		iss, err = r.certManagerIssuer(ctx, mesh, obs)
	} else {
		iss, renewal, err = r.builtInIssuer(ctx, mesh, obs)
	}
	if err != nil || iss == nil {
		return time.Time{}, err
	}
	obs.certs.IssuerExpiry = iss.Certificate().NotAfter
	obs.certs.Bundle = iss.BundlePEM()
	obs.certs.Anchors = len(iss.Roots())
	if err := r.apply(ctx, RenderTrustBundle(mesh, iss.BundlePEM())); err != nil {
		return time.Time{}, err
	}
	webhookRenewal, err := r.webhookCertificate(ctx, mesh, obs, iss, revisions)
	if err != nil {
		return time.Time{}, err
	}
	obs.certs.Ready = true
	return earliest(renewal, webhookRenewal), nil
}

func earliest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if !t.IsZero() && (out.IsZero() || t.Before(out)) {
			out = t
		}
	}
	return out
}

func (r *MeshControlPlaneReconciler) readSecret(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane, name string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: meshNamespace(mesh), Name: name}, s)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading Secret %s: %w", name, err)
	}
	return s, nil
}

// builtInIssuer keeps the operator's own CA: a trust anchor, rotated at 2/3
// of its life with the old root kept in the bundle until it expires, and an
// issuer renewed at 2/3 of its life or as soon as it no longer chains to the
// current anchor.
func (r *MeshControlPlaneReconciler) builtInIssuer(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane, obs *observation) (*identity.Issuer, time.Time, error) {
	log := logf.FromContext(ctx)
	now := r.Now()
	td := trustDomain(mesh)

	var previous []*x509.Certificate
	bundleCM := &corev1.ConfigMap{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: meshNamespace(mesh), Name: TrustBundleConfigMap}, bundleCM); err == nil {
		previous, _ = identity.ParseCertsPEM([]byte(bundleCM.Data[caCertKey]))
	} else if !apierrors.IsNotFound(err) {
		return nil, time.Time{}, fmt.Errorf("reading the trust bundle: %w", err)
	}

	anchorSecret, err := r.readSecret(ctx, mesh, TrustAnchorSecretName)
	if err != nil {
		return nil, time.Time{}, err
	}
	var anchor keyPair
	keep := false
	if anchorSecret != nil {
		crt, key := anchorSecret.Data[corev1.TLSCertKey], anchorSecret.Data[corev1.TLSPrivateKeyKey]
		parsed, perr := identity.ParseIssuer(crt, key, crt)
		switch {
		case perr != nil:
			r.event(mesh, true, meshv1alpha1.ReasonRotatingTrustAnchor, "Rotate", "Replacing an invalid trust anchor: %v", perr)
		case !now.Before(renewAt(parsed.Certificate())):
			// Keep the old root trusted for the rest of its life.
			previous = append(previous, parsed.Certificate())
			obs.certs.RotatingAnchors = true
			r.event(mesh, false, meshv1alpha1.ReasonRotatingTrustAnchor, "Rotate", "Rotating the trust anchor, which expires at %s", parsed.Certificate().NotAfter.UTC().Format(time.RFC3339))
		default:
			anchor = keyPair{CertPEM: crt, KeyPEM: key, Cert: parsed.Certificate()}
			keep = true
		}
	}
	if !keep {
		anchor, err = newTrustAnchor(td, trustAnchorLifetime(mesh), now)
		if err != nil {
			return nil, time.Time{}, err
		}
		log.Info("Created a trust anchor", "notAfter", anchor.Cert.NotAfter)
		if err := r.apply(ctx, RenderTLSSecret(mesh, TrustAnchorSecretName, ComponentIdentity, anchor.CertPEM, anchor.KeyPEM, nil)); err != nil {
			return nil, time.Time{}, err
		}
	}
	roots := mergeBundle(anchor.Cert, previous, now)
	if len(roots) > 1 {
		obs.certs.RotatingAnchors = true
	}
	bundle := identity.EncodeCertsPEM(roots)
	obs.certs.AnchorExpiry = anchor.Cert.NotAfter

	issuerSecret, err := r.readSecret(ctx, mesh, IssuerSecretName)
	if err != nil {
		return nil, time.Time{}, err
	}
	var crt, key []byte
	reissue := true
	if issuerSecret != nil {
		crt, key = issuerSecret.Data[corev1.TLSCertKey], issuerSecret.Data[corev1.TLSPrivateKeyKey]
		// Chaining to the current anchor alone (not the whole bundle) is what
		// moves the issuer onto a new anchor after a rotation.
		parsed, perr := identity.ParseIssuer(crt, key, anchor.CertPEM)
		switch {
		case perr != nil:
			log.Info("Re-issuing the issuer", "reason", perr.Error())
		case !now.Before(renewAt(parsed.Certificate())):
			log.Info("Renewing the issuer", "notAfter", parsed.Certificate().NotAfter)
		case lifetimeOf(parsed.Certificate()) > issuerLifetime(mesh)+2*time.Minute:
			log.Info("Re-issuing the issuer for a shorter lifetime", "lifetime", issuerLifetime(mesh).String())
		default:
			reissue = false
		}
	}
	if reissue {
		pair, err := newIssuerCert(anchor, anchor.KeyPEM, td, issuerLifetime(mesh), now)
		if err != nil {
			return nil, time.Time{}, err
		}
		crt, key = pair.CertPEM, pair.KeyPEM
		r.event(mesh, false, meshv1alpha1.ReasonReconciling, "Issue", "Issued the mesh issuer certificate, valid until %s", pair.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if err := r.apply(ctx, RenderTLSSecret(mesh, IssuerSecretName, ComponentIdentity, crt, key, bundle)); err != nil {
		return nil, time.Time{}, err
	}
	iss, err := identity.ParseIssuer(crt, key, bundle)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("the issuer just written does not verify: %w", err)
	}
	return iss, earliest(renewAt(anchor.Cert), renewAt(iss.Certificate())), nil
}

func lifetimeOf(c *x509.Certificate) time.Duration { return c.NotAfter.Sub(c.NotBefore) }

// certManagerIssuer asks cert-manager for the issuer and reads what it
// wrote. Until the Secret holds a valid CA, the mesh reports IssuerNotReady
// with cert-manager's own explanation.
func (r *MeshControlPlaneReconciler) certManagerIssuer(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane, obs *observation) (*identity.Issuer, error) {
	if err := r.apply(ctx, RenderIssuerCertificate(mesh)); err != nil {
		if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
			obs.certs.Message = "identity.certManager is set but cert-manager's Certificate API is not installed; install cert-manager or use identity.builtInCA"
			return nil, nil
		}
		return nil, err
	}
	secret, err := r.readSecret(ctx, mesh, IssuerSecretName)
	if err != nil {
		return nil, err
	}
	if secret == nil {
		obs.certs.Message = fmt.Sprintf("waiting for cert-manager to issue Certificate %s/%s%s", meshNamespace(mesh), IssuerCertificateName, r.certificateReason(ctx, mesh))
		return nil, nil
	}
	iss, err := identity.ParseIssuer(secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey], secret.Data[caCertKey])
	if err != nil {
		obs.certs.Message = fmt.Sprintf("Secret %s/%s from cert-manager is not a usable issuer (it needs tls.crt, tls.key and ca.crt of a CA): %v%s", meshNamespace(mesh), IssuerSecretName, err, r.certificateReason(ctx, mesh))
		return nil, nil
	}
	if r.Now().After(iss.NotAfter()) {
		obs.certs.Message = fmt.Sprintf("the issuer from cert-manager expired at %s%s", iss.NotAfter().UTC().Format(time.RFC3339), r.certificateReason(ctx, mesh))
		return nil, nil
	}
	for _, root := range iss.Roots() {
		if root.NotAfter.After(obs.certs.AnchorExpiry) {
			obs.certs.AnchorExpiry = root.NotAfter
		}
	}
	// cert-manager renews at 2/3 of the life; an issuer with less than a
	// sixth left means renewal is failing, and proxies will stop getting
	// certificates when it expires.
	c := iss.Certificate()
	if left := iss.NotAfter().Sub(r.Now()); left < lifetimeOf(c)/6 {
		obs.certs.Expiring = fmt.Sprintf("the issuer from cert-manager expires at %s and has not been renewed; check Certificate %s/%s%s",
			iss.NotAfter().UTC().Format(time.RFC3339), meshNamespace(mesh), IssuerCertificateName, r.certificateReason(ctx, mesh))
		r.event(mesh, true, meshv1alpha1.ReasonCertificateExpiring, "Renew", "%s", obs.certs.Expiring)
	}
	return iss, nil
}

func (r *MeshControlPlaneReconciler) certificateReason(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane) string {
	c := &cmv1.Certificate{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: meshNamespace(mesh), Name: IssuerCertificateName}, c); err != nil {
		return ""
	}
	for _, cond := range c.Status.Conditions {
		if cond.Type == cmv1.CertificateConditionReady && cond.Message != "" {
			return " (cert-manager: " + cond.Message + ")"
		}
	}
	return ""
}

// webhookDNSNames are the Service names of every revision, so that the
// injector of each revision serves the same certificate.
func webhookDNSNames(mesh *meshv1alpha1.MeshControlPlane, revisions []string) []string {
	var names []string
	for _, rev := range revisions {
		n := fmt.Sprintf("%s.%s.svc", RevisionObjectName(rev), meshNamespace(mesh))
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// webhookCertificate keeps Secret weft-webhook-serving valid for every
// revision's Service name and signed under the current trust bundle.
func (r *MeshControlPlaneReconciler) webhookCertificate(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane, obs *observation, iss *identity.Issuer, revisions []string) (time.Time, error) {
	now := r.Now()
	names := webhookDNSNames(mesh, revisions)
	secret, err := r.readSecret(ctx, mesh, WebhookSecretName)
	if err != nil {
		return time.Time{}, err
	}
	if secret != nil {
		if leaf, ok := usableServingCert(secret, iss, names, now); ok {
			obs.certs.WebhookExpiry = leaf.NotAfter
			return renewAt(leaf), nil
		}
	}
	id, err := spiffeid.FromSegments(spiffeid.RequireTrustDomainFromString(trustDomain(mesh)), "ns", meshNamespace(mesh), "sa", ControlPlaneName)
	if err != nil {
		return time.Time{}, err
	}
	cert, err := iss.ServingCertificate(id, names, webhookCertLifetime)
	if err != nil {
		return time.Time{}, fmt.Errorf("issuing the webhook serving certificate: %w", err)
	}
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return time.Time{}, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := r.apply(ctx, RenderTLSSecret(mesh, WebhookSecretName, ComponentInjector, chain, keyPEM, iss.BundlePEM())); err != nil {
		return time.Time{}, err
	}
	obs.certs.WebhookExpiry = cert.Leaf.NotAfter
	return renewAt(cert.Leaf), nil
}

// usableServingCert says whether the Secret's certificate can stay: key and
// certificate match, it verifies against the trust bundle for every name,
// and it is not yet due for renewal.
func usableServingCert(s *corev1.Secret, iss *identity.Issuer, names []string, now time.Time) (*x509.Certificate, bool) {
	pair, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	if err != nil || len(pair.Certificate) == 0 {
		return nil, false
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil || !now.Before(renewAt(leaf)) {
		return nil, false
	}
	roots := x509.NewCertPool()
	for _, r := range iss.Roots() {
		roots.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	for _, n := range names {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: roots, Intermediates: inter, CurrentTime: now}); err != nil {
			return nil, false
		}
	}
	return leaf, true
}
