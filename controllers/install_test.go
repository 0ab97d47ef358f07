package controllers

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/identity"
)

func get(t *testing.T, ns, name string, obj client.Object) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%T %s/%s exists", obj, ns, name), func() error {
		return env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, obj)
	})
}

// TestInstall creates a mesh from scratch and checks what a user would see:
// every object with the contract's contents, a CA whose chain verifies with
// go-spiffe, status Ready once the control plane is available, proxy counts
// from the control plane's reports, and a clean deletion.
func TestInstall(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{}
	startOperator(t, clock)
	const ns = "weft-install"
	mesh := newMesh("install", ns, "v1.0.0")
	mesh.Spec.Identity = meshv1alpha1.IdentitySpec{
		BuiltInCA:      &meshv1alpha1.BuiltInCASpec{TrustAnchorLifetime: metav1.Duration{Duration: 1000 * time.Hour}},
		IssuerLifetime: metav1.Duration{Duration: 100 * time.Hour},
	}
	mesh.Spec.Registry = "registry.example.com/weft"
	createMesh(t, mesh)

	// Until the Deployment is available the mesh says so.
	waitCondition(t, "install", meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonControlPlaneNotReady)

	d := &appsv1.Deployment{}
	get(t, ns, "weft-controlplane-v1-0-0", d)
	if d.Labels[meshv1alpha1.LabelRevision] != "v1-0-0" {
		t.Errorf("Deployment revision label = %q", d.Labels[meshv1alpha1.LabelRevision])
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.Image != "registry.example.com/weft/weft-controlplane:v1.0.0" {
		t.Errorf("image = %q", c.Image)
	}
	if !slices.Equal(c.Command, []string{"/weft-controlplane"}) {
		t.Errorf("command = %v", c.Command)
	}
	wantArgs := []string{
		"--mesh-name=install", "--namespace=" + ns, "--revision=v1-0-0", "--version=v1.0.0",
		"--trust-domain=cluster.local", "--issuer-secret=weft-issuer", "--webhook-cert-dir=/var/run/weft/webhook",
		"--proxy-image=registry.example.com/weft/weft-proxy:v1.0.0", "--grpc-addr=:8090", "--webhook-addr=:9443",
		"--health-addr=:9091", "--metrics-addr=:9090", "--leader-elect",
	}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args = %v\nwant %v", c.Args, wantArgs)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["grpc"] != 8090 || ports["webhook"] != 9443 || ports["metrics"] != 9090 || ports["health"] != 9091 {
		t.Errorf("ports = %v", ports)
	}
	if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Port.StrVal != "health" {
		t.Errorf("probes = %+v %+v", c.ReadinessProbe.HTTPGet, c.LivenessProbe.HTTPGet)
	}
	if d.Spec.Template.Spec.ServiceAccountName != ControlPlaneName {
		t.Errorf("serviceAccountName = %q", d.Spec.Template.Spec.ServiceAccountName)
	}
	if !ownedBy(d, "install") {
		t.Errorf("Deployment is not owned by the mesh: %v", d.OwnerReferences)
	}

	svc := &corev1.Service{}
	get(t, ns, "weft-controlplane-v1-0-0", svc)
	svcPorts := map[int32]string{}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Port] = p.TargetPort.String()
	}
	if svcPorts[443] != "webhook" || svcPorts[8090] != "grpc" || svcPorts[9090] != "metrics" {
		t.Errorf("Service ports = %v", svcPorts)
	}
	if svc.Spec.Selector[meshv1alpha1.LabelRevision] != "v1-0-0" {
		t.Errorf("Service selector = %v", svc.Spec.Selector)
	}
	get(t, ns, "weft-controlplane-v1-0-0", &policyv1.PodDisruptionBudget{})
	get(t, ns, ControlPlaneName, &corev1.ServiceAccount{})
	role := &rbacv1.Role{}
	get(t, ns, ControlPlaneName, role)
	cr := &rbacv1.ClusterRole{}
	get(t, "", ControlPlaneName, cr)
	for _, rules := range [][]rbacv1.PolicyRule{role.Rules, cr.Rules} {
		for _, r := range rules {
			if slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") || slices.Contains(r.APIGroups, "*") {
				t.Errorf("wildcard rule %+v", r)
			}
		}
	}
	if !grants(cr.Rules, "authentication.k8s.io", "tokenreviews", "create") || !grants(cr.Rules, "gateway.networking.k8s.io", "httproutes/status", "patch") ||
		!grants(cr.Rules, "discovery.k8s.io", "endpointslices", "watch") || !grants(role.Rules, "", "secrets", "get") ||
		!grants(role.Rules, "", "configmaps", "create") || !grants(role.Rules, "coordination.k8s.io", "leases", "update") {
		t.Errorf("control-plane RBAC misses a permission:\nClusterRole %+v\nRole %+v", cr.Rules, role.Rules)
	}
	get(t, "", ControlPlaneName, &rbacv1.ClusterRoleBinding{})

	// The built-in CA.
	anchor, issuer, webhookSecret, bundleCM := &corev1.Secret{}, &corev1.Secret{}, &corev1.Secret{}, &corev1.ConfigMap{}
	get(t, ns, TrustAnchorSecretName, anchor)
	get(t, ns, IssuerSecretName, issuer)
	get(t, ns, WebhookSecretName, webhookSecret)
	get(t, ns, TrustBundleConfigMap, bundleCM)
	root := mustCert(t, anchor.Data["tls.crt"])
	if !root.IsCA || lifetimeOf(root) != 1000*time.Hour+time.Minute {
		t.Errorf("trust anchor: isCA %v, lifetime %s, want 1000h (+1m backdating)", root.IsCA, lifetimeOf(root))
	}
	inter := mustCert(t, issuer.Data["tls.crt"])
	if !inter.IsCA || lifetimeOf(inter) != 100*time.Hour+time.Minute {
		t.Errorf("issuer: isCA %v, lifetime %s, want 100h (+1m backdating)", inter.IsCA, lifetimeOf(inter))
	}
	if string(issuer.Data["ca.crt"]) != bundleCM.Data["ca.crt"] || !strings.Contains(bundleCM.Data["ca.crt"], strings.TrimSpace(string(anchor.Data["tls.crt"]))) {
		t.Error("issuer ca.crt, trust bundle and trust anchor disagree")
	}
	// The webhook certificate is an X509-SVID of the control plane that
	// go-spiffe accepts under the mesh's bundle, for the Service's name.
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	roots := mustCerts(t, []byte(bundleCM.Data["ca.crt"]))
	chain := mustCerts(t, webhookSecret.Data["tls.crt"])
	id, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, roots))
	if err != nil {
		t.Fatalf("webhook certificate does not verify with go-spiffe: %v", err)
	}
	if id.String() != "spiffe://cluster.local/ns/"+ns+"/sa/weft-controlplane" {
		t.Errorf("webhook certificate identity = %s", id)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inters := x509.NewCertPool()
	inters.AddCert(chain[1])
	if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: "weft-controlplane-v1-0-0." + ns + ".svc", Roots: pool, Intermediates: inters}); err != nil {
		t.Errorf("webhook certificate is not valid for the Service name: %v", err)
	}

	// The webhook configuration.
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	get(t, "", WebhookConfigName, mwc)
	wh := mwc.Webhooks[0]
	if wh.Name != WebhookName || wh.ClientConfig.Service.Name != "weft-controlplane-v1-0-0" || wh.ClientConfig.Service.Namespace != ns ||
		*wh.ClientConfig.Service.Path != "/inject" || *wh.ClientConfig.Service.Port != 443 {
		t.Errorf("webhook = %s → %+v", wh.Name, wh.ClientConfig.Service)
	}
	if string(wh.ClientConfig.CABundle) != bundleCM.Data["ca.crt"] {
		t.Error("webhook caBundle is not the trust bundle")
	}
	// The CRD defaults failurePolicy to Ignore: the spec wins.
	if *wh.FailurePolicy != admissionregistrationv1.Ignore || *wh.SideEffects != admissionregistrationv1.SideEffectClassNone ||
		*wh.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy {
		t.Errorf("webhook policies = %v %v %v", *wh.FailurePolicy, *wh.SideEffects, *wh.ReinvocationPolicy)
	}
	if wh.NamespaceSelector.MatchLabels[meshv1alpha1.LabelInject] != "enabled" ||
		wh.ObjectSelector.MatchExpressions[0].Key != meshv1alpha1.LabelInject || wh.ObjectSelector.MatchExpressions[0].Values[0] != "disabled" {
		t.Errorf("webhook selectors = %+v / %+v", wh.NamespaceSelector, wh.ObjectSelector)
	}
	// The second webhook takes the pods of the other namespaces, which may
	// opt in one by one.
	if len(mwc.Webhooks) != 2 || mwc.Webhooks[1].Name != WebhookPodOptInName ||
		len(mwc.Webhooks[1].NamespaceSelector.MatchLabels) != 0 || *mwc.Webhooks[1].FailurePolicy != admissionregistrationv1.Ignore {
		t.Errorf("webhooks = %+v", mwc.Webhooks)
	}

	// The control plane comes up: Ready, with the version and revision.
	markAvailable(t, ns, "weft-controlplane-v1-0-0")
	m := waitCondition(t, "install", meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonInstalled)
	waitCondition(t, "install", meshv1alpha1.ConditionDegraded, metav1.ConditionFalse, meshv1alpha1.ReasonAsExpected)
	waitCondition(t, "install", meshv1alpha1.ConditionProgressing, metav1.ConditionFalse, meshv1alpha1.ReasonAsExpected)
	waitCondition(t, "install", meshv1alpha1.ConditionUpgradeInProgress, metav1.ConditionFalse, meshv1alpha1.ReasonNoUpgrade)
	if m.Status.Version.Desired != "v1.0.0" || m.Status.Version.Current != "v1.0.0" {
		t.Errorf("status.version = %+v", m.Status.Version)
	}
	if len(m.Status.Revisions) != 1 || m.Status.Revisions[0].Name != "v1-0-0" || !m.Status.Revisions[0].Ready {
		t.Errorf("status.revisions = %+v", m.Status.Revisions)
	}
	cs := m.Status.Certificates
	if cs.TrustAnchorExpiry == nil || !cs.TrustAnchorExpiry.Time.Equal(root.NotAfter) || cs.IssuerExpiry == nil || !cs.IssuerExpiry.Time.Equal(inter.NotAfter) ||
		cs.WebhookExpiry == nil || !cs.WebhookExpiry.Time.Equal(chain[0].NotAfter) || cs.TrustAnchors != 1 {
		t.Errorf("status.certificates = %+v", cs)
	}

	// Proxy counts: fresh reports are summed, a stale one and a malformed
	// one are left out.
	now := clock.Now()
	report := func(connected, stale int, byVersion map[string]int, updated time.Time) string {
		b, _ := json.Marshal(map[string]any{"connected": connected, "stale": stale, "byVersion": byVersion, "updated": updated.UTC().Format(time.RFC3339)})
		return string(b)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "weft-proxy-status-v1-0-0"},
		Data: map[string]string{
			"weft-controlplane-v1-0-0-a.json": report(3, 1, map[string]int{"v1.0.0": 3}, now.Add(-30*time.Second)),
			"weft-controlplane-v1-0-0-b.json": report(2, 0, map[string]int{"v1.0.0": 1, "v0.9.0": 1}, now),
			"weft-controlplane-v1-0-0-c.json": report(50, 50, map[string]int{"v1.0.0": 50}, now.Add(-5*time.Minute)),
			"weft-controlplane-v1-0-0-d.json": "{not json",
		},
	}
	if err := env.Client.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	poke(t, "install")
	waitFor(t, "status.proxies sums the fresh reports", func() error {
		p := getMesh(t, "install").Status.Proxies
		want := []meshv1alpha1.VersionCount{{Version: "v0.9.0", Count: 1}, {Version: "v1.0.0", Count: 4}}
		if p.Total != 5 || p.Stale != 1 || !slices.Equal(p.ByVersion, want) {
			return fmt.Errorf("status.proxies = %+v", p)
		}
		return nil
	})
	m = getMesh(t, "install")
	if m.Status.Revisions[0].Proxies != 5 || m.Status.Version.Current != "" {
		t.Errorf("with a v0.9.0 proxy connected: revisions %+v, current version %q (want empty); status %+v", m.Status.Revisions, m.Status.Version.Current, m.Status)
	}

	// Pods in an injected namespace without a proxy are counted, unless
	// they opted out.
	createNamespace(t, "install-apps", map[string]string{meshv1alpha1.LabelInject: "enabled"})
	t.Cleanup(func() { _ = env.Client.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace("install-apps")) })
	for name, meta := range map[string]metav1.ObjectMeta{
		"missed":    {},
		"opted-out": {Annotations: map[string]string{meshv1alpha1.LabelInject: "disabled"}},
		"meshed":    {Labels: map[string]string{meshv1alpha1.LabelRevision: "v1-0-0"}},
	} {
		meta.Name, meta.Namespace = name, "install-apps"
		pod := &corev1.Pod{ObjectMeta: meta, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}}}
		if err := env.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	poke(t, "install")
	waitFor(t, "status.proxies.uninjected counts the missed pod", func() error {
		if n := getMesh(t, "install").Status.Proxies.Uninjected; n != 1 {
			return fmt.Errorf("uninjected = %d", n)
		}
		return nil
	})
	m = getMesh(t, "install")

	// Deletion removes the cluster-scoped objects; namespaced ones are left
	// to the garbage collector through their owner references (checked
	// above), which this test API server does not run.
	if err := env.Client.Delete(ctx, m); err != nil {
		t.Fatal(err)
	}
	for _, obj := range []client.Object{&admissionregistrationv1.MutatingWebhookConfiguration{}, &rbacv1.ClusterRole{}, &rbacv1.ClusterRoleBinding{}} {
		name := ControlPlaneName
		if _, ok := obj.(*admissionregistrationv1.MutatingWebhookConfiguration); ok {
			name = WebhookConfigName
		}
		waitFor(t, fmt.Sprintf("%T is deleted", obj), func() error {
			err := env.Client.Get(ctx, client.ObjectKey{Name: name}, obj)
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there: %v", err)
		})
	}
	for _, obj := range []client.Object{svc, role, anchor, issuer, webhookSecret, bundleCM} {
		if !ownedBy(obj, "install") {
			t.Errorf("%T %s has no owner reference to the mesh", obj, obj.GetName())
		}
	}
}

func ownedBy(obj client.Object, mesh string) bool {
	for _, r := range obj.GetOwnerReferences() {
		if r.Kind == "MeshControlPlane" && r.Name == mesh && r.Controller != nil && *r.Controller {
			return true
		}
	}
	return false
}

func grants(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	for _, r := range rules {
		if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) {
			return true
		}
	}
	return false
}

func mustCerts(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	certs, err := identity.ParseCertsPEM(data)
	if err != nil || len(certs) == 0 {
		t.Fatalf("no certificate in %q: %v", data, err)
	}
	return certs
}

func mustCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	return mustCerts(t, data)[0]
}
