package controllers

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/images"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func goldenMesh() *meshv1alpha1.MeshControlPlane {
	return &meshv1alpha1.MeshControlPlane{
		ObjectMeta: metav1.ObjectMeta{Name: "mesh", UID: "00000000-0000-0000-0000-000000000001"},
		Spec: meshv1alpha1.MeshControlPlaneSpec{
			Version:     "v1.1.0",
			TrustDomain: "example.org",
			Namespace:   "weft-system",
			Identity: meshv1alpha1.IdentitySpec{
				CertManager:    &meshv1alpha1.CertManagerSpec{IssuerRef: meshv1alpha1.IssuerReference{Name: "root", Kind: "ClusterIssuer"}},
				IssuerLifetime: metav1.Duration{Duration: 720 * time.Hour},
			},
			Injection: meshv1alpha1.InjectionSpec{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"mesh.weft.dev/inject": "enabled"}},
			},
			Upgrade: meshv1alpha1.UpgradeSpec{BatchSize: 2, MaxUnavailable: intstr.FromString("25%")},
		},
	}
}

// TestRenderGolden pins every object the operator renders for one mesh.
// Run `go test ./controllers -run TestRenderGolden -update` after an
// intended change and review the diff.
func TestRenderGolden(t *testing.T) {
	m := goldenMesh()
	img, err := images.For(m.Spec.Version, "")
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]client.Object{
		"serviceaccount":      RenderServiceAccount(m),
		"clusterrole":         RenderClusterRole(m),
		"clusterrolebinding":  RenderClusterRoleBinding(m),
		"role":                RenderRole(m),
		"rolebinding":         RenderRoleBinding(m),
		"deployment":          RenderDeployment(m, img),
		"service":             RenderService(m, img),
		"poddisruptionbudget": RenderPDB(m, img),
		"webhook":             RenderWebhook(m, img.Revision, []byte("-----BEGIN CERTIFICATE-----\n...\n")),
		"issuer-certificate":  RenderIssuerCertificate(m),
		"trust-bundle":        RenderTrustBundle(m, []byte("-----BEGIN CERTIFICATE-----\n...\n")),
	}
	for name, obj := range objs {
		t.Run(name, func(t *testing.T) {
			got, err := yaml.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "render", name+".yaml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from %s (run with -update and review the diff):\n%s", name, path, got)
			}
		})
	}
}

func TestWebhookFailurePolicy(t *testing.T) {
	for _, tt := range []struct {
		spec meshv1alpha1.FailurePolicy
		want string
	}{{"", "Ignore"}, {meshv1alpha1.FailurePolicyFail, "Fail"}, {meshv1alpha1.FailurePolicyIgnore, "Ignore"}} {
		m := goldenMesh()
		m.Spec.Injection.FailurePolicy = tt.spec
		hooks := RenderWebhook(m, "v1-1-0", nil).Webhooks
		if got := string(*hooks[0].FailurePolicy); got != tt.want {
			t.Errorf("%s: failurePolicy %q → %s, want %s (the API's default is Ignore)", hooks[0].Name, tt.spec, got, tt.want)
		}
		// Pods of namespaces that never asked for the mesh are never
		// blocked by an injector outage.
		if got := *hooks[1].FailurePolicy; got != admissionregistrationv1.Ignore {
			t.Errorf("%s: failurePolicy %s with spec %q, want Ignore", hooks[1].Name, got, tt.spec)
		}
	}
}

// Which namespaces each webhook takes: the selected ones go to the first,
// every other one (bar the excluded) to the second, each only once when the
// selector is a single label.
func TestWebhookNamespaceSelectors(t *testing.T) {
	nsLabels := func(name string, l map[string]string) labels.Set {
		out := labels.Set{corev1.LabelMetadataName: name}
		for k, v := range l {
			out[k] = v
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		selector *metav1.LabelSelector
		ns       labels.Set
		want     []bool // first, second webhook
	}{
		{"default, selected", nil, nsLabels("shop", map[string]string{meshv1alpha1.LabelInject: "enabled"}), []bool{true, false}},
		{"default, other", nil, nsLabels("shop", nil), []bool{false, true}},
		{"default, disabled", nil, nsLabels("shop", map[string]string{meshv1alpha1.LabelInject: "disabled"}), []bool{false, false}},
		{"kube-system", nil, nsLabels("kube-system", map[string]string{meshv1alpha1.LabelInject: "enabled"}), []bool{false, false}},
		{"mesh namespace", nil, nsLabels("weft-system", nil), []bool{false, false}},
		{"one custom label, selected", &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}, nsLabels("shop", map[string]string{"team": "a"}), []bool{true, false}},
		{"one custom label, other", &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}, nsLabels("shop", map[string]string{"team": "b"}), []bool{false, true}},
		{"custom label but disabled", &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}, nsLabels("shop", map[string]string{"team": "a", meshv1alpha1.LabelInject: "disabled"}), []bool{false, false}},
		{"two requirements, selected: sent to both", &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a", "env": "prod"}}, nsLabels("shop", map[string]string{"team": "a", "env": "prod"}), []bool{true, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := goldenMesh()
			m.Spec.Injection.NamespaceSelector = tc.selector
			for i, wh := range RenderWebhook(m, "v1-1-0", nil).Webhooks {
				sel, err := metav1.LabelSelectorAsSelector(wh.NamespaceSelector)
				if err != nil {
					t.Fatal(err)
				}
				if got := sel.Matches(tc.ns); got != tc.want[i] {
					t.Errorf("%s (%s) selects %v: %v, want %v", wh.Name, sel, tc.ns, got, tc.want[i])
				}
			}
		})
	}
}
