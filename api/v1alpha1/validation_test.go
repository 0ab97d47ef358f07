package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/internal/testenv"
)

// These tests run against a real kube-apiserver with the generated CRDs, so
// they prove what `kubectl apply` and GitOps tools will see: defaults, and
// rejections with the message a user reads.

var env *testenv.Env

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Options{}, func(e *testenv.Env) { env = e }))
}

func decode(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("bad test YAML: %v\n%s", err, doc)
	}
	return u
}

// create stores obj and removes it at the end of the test.
func create(t *testing.T, obj *unstructured.Unstructured) error {
	t.Helper()
	err := env.Client.Create(context.Background(), obj)
	if err == nil {
		t.Cleanup(func() {
			if err := env.Client.Delete(context.Background(), obj); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("cleanup: %v", err)
			}
		})
	}
	return err
}

func TestSamplesApplyWithDefaults(t *testing.T) {
	// Fields the API server must fill in for each sample that leaves them out.
	wantDefaults := map[string]map[string]any{
		"mesh_v1alpha1_meshcontrolplane.yaml": {
			"spec.trustDomain":                            "cluster.local",
			"spec.namespace":                              "weft-system",
			"spec.mtls.mode":                              "Strict",
			"spec.identity.issuerLifetime":                "8760h",
			"spec.identity.leafLifetime":                  "24h",
			"spec.identity.builtInCA.trustAnchorLifetime": "87600h",
			"spec.proxy.logLevel":                         "info",
			"spec.proxy.resources.requests.memory":        "20Mi",
			"spec.injection.failurePolicy":                "Ignore",
			"spec.injection.missedPods":                   "Report",
			"spec.injection.namespaceSelector.matchLabels.mesh\\.weft\\.dev/inject": "enabled",
			"spec.authorization.defaultPolicy":                                      "Allow",
			"spec.upgrade.strategy":                                                 "RollingBatches",
			"spec.upgrade.batchSize":                                                int64(5),
			"spec.upgrade.maxUnavailable":                                           "25%",
			"spec.upgrade.batchTimeout":                                             "10m",
			"spec.observability.accessLog":                                          "Off",
			"spec.observability.scrapeAnnotations":                                  "Enabled",
		},
		"mesh_v1alpha1_meshcontrolplane_full.yaml": {
			"spec.identity.certManager.issuerRef.group": "cert-manager.io",
			"spec.identity.leafLifetime":                "12h",
			"spec.upgrade.maxUnavailable":               int64(2),
		},
		"mesh_v1alpha1_trafficsplit.yaml": {
			"spec.service": "web",
		},
		"mesh_v1alpha1_trafficsplit_matches.yaml": {
			"spec.matches.0.headers.0.type": "Exact",
			"spec.matches.0.path.type":      "PathPrefix",
			"spec.matches.0.path.value":     "/",
			"spec.backends.0.weight":        int64(1),
		},
		"mesh_v1alpha1_authorizationpolicy.yaml": {
			"spec.rules.0.to.0.paths.0.type": "PathPrefix",
			"spec.rules.0.to.0.paths.1.type": "Exact",
		},
		"mesh_v1alpha1_authorizationpolicy_deny.yaml": {
			"spec.action": "Deny",
		},
	}
	dir := filepath.Join(testenv.RepoRoot(), "config", "samples")
	files, err := filepath.Glob(filepath.Join(dir, "mesh_*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples in %s: %v", dir, err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			want, ok := wantDefaults[name]
			if !ok {
				t.Fatalf("sample %s has no expected defaults in this test: add them", name)
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			obj := decode(t, string(data))
			if err := create(t, obj); err != nil {
				t.Fatalf("sample rejected: %v", err)
			}
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(obj.GroupVersionKind())
			if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), got); err != nil {
				t.Fatal(err)
			}
			for path, v := range want {
				if g := lookup(got.Object, path); g != v {
					t.Errorf("%s = %#v, want %#v", path, g, v)
				}
			}
		})
	}
}

// lookup follows a dotted path ("a.b.0.c"; "\\." escapes a dot in a key).
func lookup(obj any, path string) any {
	parts := strings.Split(strings.ReplaceAll(path, `\.`, "\x00"), ".")
	cur := obj
	for _, p := range parts {
		p = strings.ReplaceAll(p, "\x00", ".")
		switch c := cur.(type) {
		case map[string]any:
			cur = c[p]
		case []any:
			i := 0
			for _, r := range p {
				i = i*10 + int(r-'0')
			}
			if i >= len(c) {
				return nil
			}
			cur = c[i]
		default:
			return nil
		}
	}
	return cur
}

func TestStatusIsASubresource(t *testing.T) {
	ctx := context.Background()
	mcp := decode(t, `
apiVersion: mesh.weft.dev/v1alpha1
kind: MeshControlPlane
metadata: {name: status-test}
spec: {version: v1.0.0}`)
	if err := create(t, mcp); err != nil {
		t.Fatal(err)
	}

	// Writing status through the status subresource changes status only.
	withStatus := mcp.DeepCopy()
	_ = unstructured.SetNestedField(withStatus.Object, "v9.9.9", "spec", "version")
	_ = unstructured.SetNestedField(withStatus.Object, int64(7), "status", "proxies", "total")
	_ = unstructured.SetNestedSlice(withStatus.Object, []any{map[string]any{
		"type": "Ready", "status": "True", "reason": "Installed", "message": "ok",
		"lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": int64(1),
	}}, "status", "conditions")
	if err := env.Client.Status().Update(ctx, withStatus); err != nil {
		t.Fatalf("status update: %v", err)
	}
	got := mcp.DeepCopy()
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(mcp), got); err != nil {
		t.Fatal(err)
	}
	if v := lookup(got.Object, "spec.version"); v != "v1.0.0" {
		t.Errorf("status update changed spec.version to %v", v)
	}
	if v := lookup(got.Object, "status.proxies.total"); v != int64(7) {
		t.Errorf("status.proxies.total = %v, want 7", v)
	}
	if v := lookup(got.Object, "status.conditions.0.reason"); v != "Installed" {
		t.Errorf("status.conditions[0].reason = %v, want Installed", v)
	}

	// Writing the main resource changes spec only.
	_ = unstructured.SetNestedField(got.Object, "v1.1.0", "spec", "version")
	_ = unstructured.SetNestedField(got.Object, int64(99), "status", "proxies", "total")
	if err := env.Client.Update(ctx, got); err != nil {
		t.Fatalf("spec update: %v", err)
	}
	final := mcp.DeepCopy()
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(mcp), final); err != nil {
		t.Fatal(err)
	}
	if v := lookup(final.Object, "spec.version"); v != "v1.1.0" {
		t.Errorf("spec.version = %v, want v1.1.0", v)
	}
	if v := lookup(final.Object, "status.proxies.total"); v != int64(7) {
		t.Errorf("a spec update changed status.proxies.total to %v", v)
	}
	if final.GetGeneration() != 2 {
		t.Errorf("generation = %d, want 2 (status writes must not bump it)", final.GetGeneration())
	}

	// A condition without a reason is refused: status is validated too.
	bad := final.DeepCopy()
	_ = unstructured.SetNestedSlice(bad.Object, []any{map[string]any{
		"type": "Ready", "status": "True", "message": "no reason", "lastTransitionTime": "2026-01-01T00:00:00Z",
	}}, "status", "conditions")
	if err := env.Client.Status().Update(ctx, bad); err == nil || !strings.Contains(err.Error(), "reason") {
		t.Errorf("condition without reason: err = %v, want a complaint about reason", err)
	}
}
