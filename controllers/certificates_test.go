package controllers

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/identity"
)

func secret(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	get(t, ns, name, s)
	return s
}

// aged creates a trust anchor, and an issuer under it, as if they had been
// issued age ago: the certificates stay valid on the wall clock (which the
// identity package checks), only their remaining life is short.
func agedAnchor(t *testing.T, age, life time.Duration) keyPair {
	t.Helper()
	kp, err := newTrustAnchor("cluster.local", life, time.Now().Add(-age))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func agedIssuer(t *testing.T, anchor keyPair, age, life time.Duration) keyPair {
	t.Helper()
	kp, err := newIssuerCert(anchor, anchor.KeyPEM, "cluster.local", life, time.Now().Add(-age))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// preload writes CA Secrets before the mesh exists, as a previous operator
// would have left them.
func preload(t *testing.T, ns string, anchor keyPair, issuer *keyPair) {
	t.Helper()
	ctx := context.Background()
	createNamespace(t, ns, nil)
	put := func(name string, data map[string][]byte) {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{LabelPartOf: PartOf}}, Type: corev1.SecretTypeTLS, Data: data}
		if err := env.Client.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	put(TrustAnchorSecretName, map[string][]byte{"tls.crt": anchor.CertPEM, "tls.key": anchor.KeyPEM})
	if issuer != nil {
		put(IssuerSecretName, map[string][]byte{"tls.crt": issuer.CertPEM, "tls.key": issuer.KeyPEM, "ca.crt": anchor.CertPEM})
	}
}

func caMesh(name, ns string, anchorLife, issuerLife time.Duration) *meshv1alpha1.MeshControlPlane {
	m := newMesh(name, ns, "v1.0.0")
	m.Spec.Identity = meshv1alpha1.IdentitySpec{
		BuiltInCA:      &meshv1alpha1.BuiltInCASpec{TrustAnchorLifetime: metav1.Duration{Duration: anchorLife}},
		IssuerLifetime: metav1.Duration{Duration: issuerLife},
	}
	return m
}

// TestBuiltInCARenewal starts the operator on CA material of known age and
// checks what it does with it: an issuer before 2/3 of its life is kept, one
// after is renewed under the same anchor; an anchor after 2/3 of its life is
// rotated with the old root kept in the bundle and the issuer moved under
// the new root.
func TestBuiltInCARenewal(t *testing.T) {
	startOperator(t, &fakeClock{})
	const anchorLife, issuerLife = 720 * time.Hour, 48 * time.Hour

	t.Run("issuer before 2/3 of its life is kept", func(t *testing.T) {
		const ns = "weft-ca-young"
		anchor := agedAnchor(t, time.Hour, anchorLife)
		issuer := agedIssuer(t, anchor, 31*time.Hour, issuerLife)
		preload(t, ns, anchor, &issuer)
		createMesh(t, caMesh("ca-young", ns, anchorLife, issuerLife))
		waitCondition(t, "ca-young", meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonControlPlaneNotReady)
		if got := mustCert(t, secret(t, ns, IssuerSecretName).Data["tls.crt"]); !got.Equal(issuer.Cert) {
			t.Error("the issuer was renewed before 2/3 of its life")
		}
		if got := mustCert(t, secret(t, ns, TrustAnchorSecretName).Data["tls.crt"]); !got.Equal(anchor.Cert) {
			t.Error("the trust anchor was replaced before 2/3 of its life")
		}
	})

	t.Run("issuer past 2/3 of its life is renewed", func(t *testing.T) {
		const ns = "weft-ca-renew"
		anchor := agedAnchor(t, time.Hour, anchorLife)
		issuer := agedIssuer(t, anchor, 33*time.Hour, issuerLife)
		preload(t, ns, anchor, &issuer)
		createMesh(t, caMesh("ca-renew", ns, anchorLife, issuerLife))
		var renewed *x509.Certificate
		waitFor(t, "the issuer is renewed", func() error {
			renewed = mustCert(t, secret(t, ns, IssuerSecretName).Data["tls.crt"])
			if renewed.Equal(issuer.Cert) {
				return fmt.Errorf("still the old issuer")
			}
			return nil
		})
		if err := renewed.CheckSignatureFrom(anchor.Cert); err != nil {
			t.Errorf("the renewed issuer is not signed by the trust anchor: %v", err)
		}
		if lifetimeOf(renewed) != issuerLife+time.Minute {
			t.Errorf("renewed issuer lifetime %s, want 48h (+1m backdating)", lifetimeOf(renewed))
		}
		waitFor(t, "status shows the new issuer expiry", func() error {
			cs := getMesh(t, "ca-renew").Status.Certificates
			if cs.IssuerExpiry == nil || !cs.IssuerExpiry.Time.Equal(renewed.NotAfter) {
				return fmt.Errorf("issuerExpiry %v, want %v", cs.IssuerExpiry, renewed.NotAfter)
			}
			return nil
		})
	})

	t.Run("trust anchor past 2/3 of its life is rotated with an overlap", func(t *testing.T) {
		const ns = "weft-ca-rotate"
		old := agedAnchor(t, 500*time.Hour, anchorLife)
		issuer := agedIssuer(t, old, time.Hour, issuerLife)
		preload(t, ns, old, &issuer)
		createMesh(t, caMesh("ca-rotate", ns, anchorLife, issuerLife))
		waitFor(t, "the trust anchor is rotated with an overlap", func() error {
			root := mustCert(t, secret(t, ns, TrustAnchorSecretName).Data["tls.crt"])
			if root.Equal(old.Cert) {
				return fmt.Errorf("still the old anchor")
			}
			is := secret(t, ns, IssuerSecretName)
			roots := mustCerts(t, is.Data["ca.crt"])
			if len(roots) != 2 || !roots[0].Equal(root) || !roots[1].Equal(old.Cert) {
				return fmt.Errorf("bundle has %d roots, want the new then the old", len(roots))
			}
			if err := mustCert(t, is.Data["tls.crt"]).CheckSignatureFrom(root); err != nil {
				return fmt.Errorf("the issuer is not signed by the new root: %v", err)
			}
			if _, err := identity.ParseIssuer(is.Data["tls.crt"], is.Data["tls.key"], is.Data["ca.crt"]); err != nil {
				return err
			}
			cm := &corev1.ConfigMap{}
			get(t, ns, TrustBundleConfigMap, cm)
			if cm.Data["ca.crt"] != string(is.Data["ca.crt"]) {
				return fmt.Errorf("trust bundle ConfigMap differs from the issuer's ca.crt")
			}
			return nil
		})
		markAvailable(t, ns, "weft-controlplane-v1-0-0")
		m := waitCondition(t, "ca-rotate", meshv1alpha1.ConditionProgressing, metav1.ConditionTrue, meshv1alpha1.ReasonRotatingTrustAnchor)
		if m.Status.Certificates.TrustAnchors != 2 {
			t.Errorf("status.certificates.trustAnchors = %d, want 2", m.Status.Certificates.TrustAnchors)
		}
	})
}

// TestMergeBundle: the previous roots stay until they expire.
func TestMergeBundle(t *testing.T) {
	now := time.Now()
	cur := agedAnchor(t, 0, 720*time.Hour).Cert
	live := agedAnchor(t, 500*time.Hour, 720*time.Hour).Cert
	dead := agedAnchor(t, 800*time.Hour, 720*time.Hour).Cert
	got := mergeBundle(cur, []*x509.Certificate{cur, live, dead, live}, now)
	if len(got) != 2 || !got[0].Equal(cur) || !got[1].Equal(live) {
		t.Errorf("mergeBundle kept %d roots, want the current and the unexpired previous one", len(got))
	}
}

// TestCertManagerIssuer checks the cert-manager path: the operator requests
// the issuer as an isCA Certificate and reports IssuerNotReady until the
// Secret exists. The test then does what cert-manager's CA issuer would do:
// it writes the Secret (tls.crt, tls.key, ca.crt, with the secretTemplate's
// labels) signed by a test root.
func TestCertManagerIssuer(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{}
	startOperator(t, clock)
	const ns = "weft-certmanager"
	mesh := newMesh("certmanager", ns, "v1.0.0")
	mesh.Spec.Identity = meshv1alpha1.IdentitySpec{
		CertManager:    &meshv1alpha1.CertManagerSpec{IssuerRef: meshv1alpha1.IssuerReference{Name: "mesh-root", Kind: "ClusterIssuer"}},
		IssuerLifetime: metav1.Duration{Duration: 720 * time.Hour},
	}
	createMesh(t, mesh)

	m := waitCondition(t, "certmanager", meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonIssuerNotReady)
	if c := findCondition(m, meshv1alpha1.ConditionReady); !strings.Contains(c.Message, "waiting for cert-manager to issue Certificate "+ns+"/weft-issuer") {
		t.Errorf("Ready message = %q", c.Message)
	}
	waitCondition(t, "certmanager", meshv1alpha1.ConditionDegraded, metav1.ConditionTrue, meshv1alpha1.ReasonIssuerNotReady)
	cert := &cmv1.Certificate{}
	get(t, ns, IssuerCertificateName, cert)
	if !cert.Spec.IsCA || cert.Spec.SecretName != IssuerSecretName || cert.Spec.IssuerRef.Name != "mesh-root" ||
		cert.Spec.IssuerRef.Kind != "ClusterIssuer" || cert.Spec.IssuerRef.Group != "cert-manager.io" ||
		cert.Spec.Duration.Duration != 720*time.Hour || cert.Spec.RenewBefore.Duration != 240*time.Hour {
		t.Errorf("Certificate spec = %+v", cert.Spec)
	}
	if !ownedBy(cert, "certmanager") {
		t.Error("the Certificate is not owned by the mesh")
	}

	// Play cert-manager's CA issuer.
	now := time.Now()
	root, err := newTrustAnchor("cluster.local", 2000*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := newIssuerCert(root, root.KeyPEM, "cluster.local", 720*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: IssuerSecretName, Labels: cert.Spec.SecretTemplate.Labels},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": inter.CertPEM, "tls.key": inter.KeyPEM, "ca.crt": root.CertPEM},
	}
	if err := env.Client.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, "certmanager", meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonControlPlaneNotReady)
	markAvailable(t, ns, "weft-controlplane-v1-0-0")
	m = waitCondition(t, "certmanager", meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonInstalled)
	cs := m.Status.Certificates
	if cs.IssuerExpiry == nil || !cs.IssuerExpiry.Time.Equal(inter.Cert.NotAfter) || cs.TrustAnchorExpiry == nil || !cs.TrustAnchorExpiry.Time.Equal(root.Cert.NotAfter) || cs.WebhookExpiry == nil {
		t.Errorf("status.certificates = %+v", cs)
	}
	cm := &corev1.ConfigMap{}
	get(t, ns, TrustBundleConfigMap, cm)
	if cm.Data["ca.crt"] != string(root.CertPEM) {
		t.Error("the trust bundle is not the Secret's ca.crt")
	}
	// No built-in anchor in this mode.
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: TrustAnchorSecretName}, &corev1.Secret{}); err == nil {
		t.Error("a built-in trust anchor was created in cert-manager mode")
	}

	// An issuer that cert-manager fails to renew is reported before it
	// expires.
	old := agedIssuer(t, root, 650*time.Hour, 720*time.Hour)
	s.Data["tls.crt"], s.Data["tls.key"] = old.CertPEM, old.KeyPEM
	if err := env.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, "certmanager", meshv1alpha1.ConditionDegraded, metav1.ConditionTrue, meshv1alpha1.ReasonCertificateExpiring)
	waitCondition(t, "certmanager", meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonInstalled)

	// A Secret that is not a CA is reported, not used.
	s.Data["tls.crt"] = secret(t, ns, WebhookSecretName).Data["tls.crt"]
	if err := env.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, "certmanager", meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonIssuerNotReady)
}

// TestUnknownVersion: a version the operator has no images for is reported,
// and nothing is installed.
func TestUnknownVersion(t *testing.T) {
	startOperator(t, &fakeClock{})
	createMesh(t, newMesh("unknown", "weft-unknown", "v9.9.9"))
	m := waitCondition(t, "unknown", meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonUnknownVersion)
	if c := findCondition(m, meshv1alpha1.ConditionReady); !strings.Contains(c.Message, `version "v9.9.9" is not one this operator can install`) {
		t.Errorf("Ready message = %q", c.Message)
	}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: "weft-unknown"}, &corev1.Namespace{}); err == nil {
		t.Error("the mesh namespace was created for an unknown version")
	}
}

// TestConflict: a second MeshControlPlane is refused with Conflict and
// changes nothing; the first keeps working.
func TestConflict(t *testing.T) {
	startOperator(t, &fakeClock{})
	createMesh(t, newMesh("first", "weft-first", "v1.0.0"))
	waitCondition(t, "first", meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonControlPlaneNotReady)
	createMesh(t, newMesh("second", "weft-second", "v1.0.0"))
	waitCondition(t, "second", meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonConflict)
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: "weft-second"}, &corev1.Namespace{}); err == nil {
		t.Error("the conflicting mesh created its namespace")
	}
	markAvailable(t, "weft-first", "weft-controlplane-v1-0-0")
	waitCondition(t, "first", meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonInstalled)
}

// TestInvalidSelector: a namespace selector the schema lets through but
// Kubernetes cannot use is reported with the field's name, not retried.
func TestInvalidSelector(t *testing.T) {
	startOperator(t, &fakeClock{})
	m := newMesh("badselector", "weft-badselector", "v1.0.0")
	m.Spec.Injection.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Near"}}}
	createMesh(t, m)
	m = waitCondition(t, "badselector", meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonApplyFailed)
	if c := findCondition(m, meshv1alpha1.ConditionReady); !strings.Contains(c.Message, "spec.injection.namespaceSelector") {
		t.Errorf("Ready message = %q", c.Message)
	}
}
