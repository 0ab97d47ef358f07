package controllers

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
		for _, wh := range RenderWebhook(m, "v1-1-0", nil).Webhooks {
			if got := string(*wh.FailurePolicy); got != tt.want {
				t.Errorf("%s: failurePolicy %q → %s, want %s (the API's default is Ignore)", wh.Name, tt.spec, got, tt.want)
			}
		}
	}
}
