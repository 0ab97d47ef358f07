// Package install checks that the kustomize install (config/default) is
// accepted by a real API server, the way `kubectl apply -k config/default
// --dry-run=server` would check it, with the Gateway API and cert-manager
// CRDs installed first as the README asks.
package install

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/weftmesh/weft/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Options{GatewayAPI: true, CertManager: true}, func(e *testenv.Env) { env = e }))
}

func build(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(testenv.RepoRoot(), dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range m.Resources() {
		mp, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, &unstructured.Unstructured{Object: mp})
	}
	return out
}

// apply server-side-applies every object with dry-run, except namespaces,
// which are created for real: a dry-run namespace does not exist for the
// objects that go into it.
func apply(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	for _, u := range objs {
		if u.GetKind() == "Namespace" {
			ns := &corev1.Namespace{}
			ns.Name = u.GetName()
			if err := env.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		}
	}
	for _, u := range objs {
		if u.GetKind() == "Namespace" {
			continue
		}
		err := env.Client.Patch(ctx, u, client.Apply, client.DryRunAll, client.FieldOwner("install-test"), client.ForceOwnership)
		if err != nil {
			var st apierrors.APIStatus
			if errors.As(err, &st) {
				t.Errorf("%s %s/%s rejected: %s", u.GetKind(), u.GetNamespace(), u.GetName(), st.Status().Message)
			} else {
				t.Errorf("%s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
			}
		}
	}
}

func TestDefaultInstallIsAccepted(t *testing.T) {
	objs := build(t, "config/default")
	kinds := map[string]int{}
	for _, u := range objs {
		kinds[u.GetKind()]++
		if u.GetKind() != "Namespace" && u.GetKind() != "CustomResourceDefinition" && u.GetKind() != "ClusterRole" &&
			u.GetKind() != "ClusterRoleBinding" && u.GetKind() != "MutatingWebhookConfiguration" && u.GetNamespace() != "weft-system" {
			t.Errorf("%s %s is not in weft-system", u.GetKind(), u.GetName())
		}
	}
	for _, k := range []string{"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment"} {
		if kinds[k] == 0 {
			t.Errorf("config/default installs no %s", k)
		}
	}
	apply(t, objs)
}

// TestSamplesAreAccepted: every sample in config/samples passes the CRD
// schema and CEL rules (the samples are what the OLM console offers).
func TestSamplesAreAccepted(t *testing.T) {
	objs := build(t, "config/samples")
	for _, u := range objs {
		if u.GetNamespace() == "" && u.GetKind() != "MeshControlPlane" {
			u.SetNamespace("default")
		}
	}
	apply(t, objs)
}

// TestWebhookReferenceIsAccepted: config/webhook, the injection webhook as
// the operator renders it, is a valid object (the API server checks its
// selectors, names and policies).
func TestWebhookReferenceIsAccepted(t *testing.T) {
	objs := build(t, "config/webhook")
	if len(objs) != 1 || objs[0].GetKind() != "MutatingWebhookConfiguration" {
		t.Fatalf("config/webhook builds %d objects, want the one webhook configuration", len(objs))
	}
	apply(t, objs)
}
