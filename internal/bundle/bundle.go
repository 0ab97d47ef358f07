// Package bundle writes Weft's OLM bundle (bundle/ and bundle.Dockerfile)
// from the kustomize install in config/manifests and the hand-written part of
// the ClusterServiceVersion in config/manifests/bases.
//
// The operator-sdk CLI usually does this; it cannot be installed with `go
// install` (its module has replace directives), so the little it does for a
// project of this shape is done here, with the operator-framework API types,
// and checked by the same validators OperatorHub runs (see the tests).
package bundle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/blang/semver/v4"
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Package is the OLM package name.
const Package = "weft"

// Options choose what the bundle describes.
type Options struct {
	// Root is the repository root.
	Root string
	// Version is the operator's semantic version, without a leading v.
	Version string
	// Registry prefixes the image names (ghcr.io/weftmesh).
	Registry string
	// Channels the bundle is published in; the first is the default.
	Channels []string
	// Replaces is the CSV this one upgrades in place ("" for none).
	Replaces string
	// SkipRange lets OLM upgrade directly from any version in the range
	// (e.g. ">=0.0.0 <0.1.0"); "" for none.
	SkipRange string
}

// Files are the generated files, by path relative to Root.
type Files map[string][]byte

// Generate builds the bundle in memory. Write puts it on disk.
func Generate(o Options) (Files, error) {
	v, err := semver.Parse(o.Version)
	if err != nil {
		return nil, fmt.Errorf("version %q is not semver (no leading v): %w", o.Version, err)
	}
	if len(o.Channels) == 0 {
		return nil, fmt.Errorf("at least one channel is needed")
	}
	objs, err := build(filepath.Join(o.Root, "config", "manifests"))
	if err != nil {
		return nil, err
	}
	base, err := os.ReadFile(filepath.Join(o.Root, "config", "manifests", "bases", Package+".clusterserviceversion.yaml"))
	if err != nil {
		return nil, err
	}
	var csv operatorsv1alpha1.ClusterServiceVersion
	if err := yaml.UnmarshalStrict(base, &csv); err != nil {
		return nil, fmt.Errorf("base CSV: %w", err)
	}

	tag := "v" + o.Version
	operatorImage := o.Registry + "/weft:" + tag
	csv.Name = fmt.Sprintf("%s.v%s", Package, o.Version)
	csv.Namespace = ""
	csv.Spec.Version.Version = v
	csv.Annotations["containerImage"] = operatorImage
	csv.Spec.Replaces = o.Replaces
	if o.SkipRange != "" {
		csv.Annotations["olm.skipRange"] = o.SkipRange
	}
	csv.Spec.RelatedImages = []operatorsv1alpha1.RelatedImage{
		{Name: "operator", Image: operatorImage},
		{Name: "controlplane", Image: o.Registry + "/weft-controlplane:" + tag},
		{Name: "proxy", Image: o.Registry + "/weft-proxy:" + tag},
	}

	files := Files{}
	var (
		strategy     operatorsv1alpha1.StrategyDetailsDeployment
		examples     []map[string]any
		clusterRoles = map[string][]rbacv1.PolicyRule{}
		roles        = map[string][]rbacv1.PolicyRule{}
		crb          []rbacv1.ClusterRoleBinding
		rb           []rbacv1.RoleBinding
		owned        = map[string]string{} // CRD name → served storage version
	)
	for _, u := range objs {
		gvk := u.GroupVersionKind()
		switch {
		case gvk.Group == "mesh.weft.dev":
			examples = append(examples, u.Object)
		case gvk.Kind == "CustomResourceDefinition":
			var crd apiextensionsv1.CustomResourceDefinition
			if err := convert(u, &crd); err != nil {
				return nil, err
			}
			for _, ver := range crd.Spec.Versions {
				if ver.Storage {
					owned[crd.Name] = ver.Name
				}
			}
			u.SetNamespace("")
			b, err := marshal(u.Object)
			if err != nil {
				return nil, err
			}
			files[filepath.Join("bundle", "manifests", crd.Spec.Group+"_"+crd.Spec.Names.Plural+".yaml")] = b
		case gvk.Kind == "Deployment":
			var d appsv1.Deployment
			if err := convert(u, &d); err != nil {
				return nil, err
			}
			for i := range d.Spec.Template.Spec.Containers {
				c := &d.Spec.Template.Spec.Containers[i]
				if c.Name == "manager" {
					c.Image = operatorImage
				}
			}
			strategy.DeploymentSpecs = append(strategy.DeploymentSpecs, operatorsv1alpha1.StrategyDeploymentSpec{
				Name: d.Name, Spec: d.Spec, Label: d.Labels,
			})
		case gvk.Kind == "ClusterRole":
			var r rbacv1.ClusterRole
			if err := convert(u, &r); err != nil {
				return nil, err
			}
			clusterRoles[r.Name] = r.Rules
		case gvk.Kind == "Role":
			var r rbacv1.Role
			if err := convert(u, &r); err != nil {
				return nil, err
			}
			roles[r.Name] = r.Rules
		case gvk.Kind == "ClusterRoleBinding":
			var b rbacv1.ClusterRoleBinding
			if err := convert(u, &b); err != nil {
				return nil, err
			}
			crb = append(crb, b)
		case gvk.Kind == "RoleBinding":
			var b rbacv1.RoleBinding
			if err := convert(u, &b); err != nil {
				return nil, err
			}
			rb = append(rb, b)
		case gvk.Kind == "Namespace", gvk.Kind == "ServiceAccount":
			// OLM creates the namespace (the OperatorGroup's) and the
			// ServiceAccounts named by the install strategy.
		case gvk.Kind == "Service", gvk.Kind == "ConfigMap":
			u.SetNamespace("")
			b, err := marshal(u.Object)
			if err != nil {
				return nil, err
			}
			files[filepath.Join("bundle", "manifests", u.GetName()+"_"+strings.ToLower(gvk.Version)+"_"+strings.ToLower(gvk.Kind)+".yaml")] = b
		default:
			return nil, fmt.Errorf("config/manifests has a %s %q that an OLM bundle cannot carry", gvk.Kind, u.GetName())
		}
	}
	if len(strategy.DeploymentSpecs) != 1 {
		return nil, fmt.Errorf("want exactly one Deployment (the operator), found %d", len(strategy.DeploymentSpecs))
	}
	// A ClusterRole not bound to a ServiceAccount (the metrics reader, for
	// Prometheus) is shipped as a manifest of its own for users to bind.
	bound := map[string]bool{}
	for _, b := range crb {
		for _, s := range b.Subjects {
			if s.Kind == "ServiceAccount" && b.RoleRef.Kind == "ClusterRole" {
				strategy.ClusterPermissions = appendRules(strategy.ClusterPermissions, s.Name, clusterRoles[b.RoleRef.Name])
				bound[b.RoleRef.Name] = true
			}
		}
	}
	for _, b := range rb {
		for _, s := range b.Subjects {
			if s.Kind != "ServiceAccount" {
				continue
			}
			if b.RoleRef.Kind == "Role" {
				strategy.Permissions = appendRules(strategy.Permissions, s.Name, roles[b.RoleRef.Name])
			} else {
				strategy.Permissions = appendRules(strategy.Permissions, s.Name, clusterRoles[b.RoleRef.Name])
				bound[b.RoleRef.Name] = true
			}
		}
	}
	for name, rules := range clusterRoles {
		if bound[name] {
			continue
		}
		b, err := marshal(map[string]any{
			"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
			"metadata": map[string]any{"name": name}, "rules": rules,
		})
		if err != nil {
			return nil, err
		}
		files[filepath.Join("bundle", "manifests", name+"_rbac.authorization.k8s.io_v1_clusterrole.yaml")] = b
	}
	csv.Spec.InstallStrategy = operatorsv1alpha1.NamedInstallStrategy{
		StrategyName: operatorsv1alpha1.InstallStrategyNameDeployment,
		StrategySpec: strategy,
	}

	for i := range csv.Spec.CustomResourceDefinitions.Owned {
		d := &csv.Spec.CustomResourceDefinitions.Owned[i]
		ver, ok := owned[d.Name]
		if !ok {
			return nil, fmt.Errorf("the base CSV owns %s, which config/manifests does not install", d.Name)
		}
		d.Version = ver
		delete(owned, d.Name)
	}
	if len(owned) > 0 {
		return nil, fmt.Errorf("describe these CRDs in the base CSV: %v", keys(owned))
	}
	ex, err := json.MarshalIndent(examples, "", "  ")
	if err != nil {
		return nil, err
	}
	csv.Annotations["alm-examples"] = string(ex)

	b, err := marshal(&csv)
	if err != nil {
		return nil, err
	}
	files[filepath.Join("bundle", "manifests", Package+".clusterserviceversion.yaml")] = b

	labels := [][2]string{
		{"operators.operatorframework.io.bundle.mediatype.v1", "registry+v1"},
		{"operators.operatorframework.io.bundle.manifests.v1", "manifests/"},
		{"operators.operatorframework.io.bundle.metadata.v1", "metadata/"},
		{"operators.operatorframework.io.bundle.package.v1", Package},
		{"operators.operatorframework.io.bundle.channels.v1", strings.Join(o.Channels, ",")},
		{"operators.operatorframework.io.bundle.channel.default.v1", o.Channels[0]},
		{"operators.operatorframework.io.test.mediatype.v1", "scorecard+v1"},
		{"operators.operatorframework.io.test.config.v1", "tests/scorecard/"},
	}
	var ann, dockerfile bytes.Buffer
	ann.WriteString("# Generated by `make bundle` (hack/bundle). DO NOT EDIT.\nannotations:\n")
	dockerfile.WriteString("# Generated by `make bundle` (hack/bundle). DO NOT EDIT.\n# The OLM bundle image: docker build -f bundle.Dockerfile -t <registry>/weft-bundle:<version> .\nFROM scratch\n\n")
	for _, l := range labels {
		fmt.Fprintf(&ann, "  %s: %s\n", l[0], l[1])
		fmt.Fprintf(&dockerfile, "LABEL %s=%s\n", l[0], l[1])
	}
	dockerfile.WriteString("\nCOPY bundle/manifests /manifests/\nCOPY bundle/metadata /metadata/\nCOPY bundle/tests/scorecard /tests/scorecard/\n")
	files[filepath.Join("bundle", "metadata", "annotations.yaml")] = ann.Bytes()
	files["bundle.Dockerfile"] = dockerfile.Bytes()
	files[filepath.Join("bundle", "tests", "scorecard", "config.yaml")] = scorecard()
	return files, nil
}

// Write replaces bundle/ with files (a stale manifest from a removed
// resource must not survive) and writes bundle.Dockerfile.
func Write(root string, files Files) error {
	if err := os.RemoveAll(filepath.Join(root, "bundle")); err != nil {
		return err
	}
	for p, b := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func build(dir string) ([]*unstructured.Unstructured, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range m.Resources() {
		mp, err := r.Map()
		if err != nil {
			return nil, err
		}
		out = append(out, &unstructured.Unstructured{Object: mp})
	}
	return out, nil
}

func convert(u *unstructured.Unstructured, into any) error {
	b, err := json.Marshal(u.Object)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, into); err != nil {
		return fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return nil
}

func marshal(v any) ([]byte, error) {
	b, err := yaml.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append([]byte("# Generated by `make bundle` (hack/bundle). DO NOT EDIT.\n"), b...), nil
}

func appendRules(ps []operatorsv1alpha1.StrategyDeploymentPermissions, sa string, rules []rbacv1.PolicyRule) []operatorsv1alpha1.StrategyDeploymentPermissions {
	for i := range ps {
		if ps[i].ServiceAccountName == sa {
			ps[i].Rules = append(ps[i].Rules, rules...)
			return ps
		}
	}
	return append(ps, operatorsv1alpha1.StrategyDeploymentPermissions{ServiceAccountName: sa, Rules: slices.Clone(rules)})
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// scorecard is the bundle's scorecard configuration: the basic and OLM test
// suites of operator-sdk's scorecard image.
func scorecard() []byte {
	const image = "quay.io/operator-framework/scorecard-test:v1.41.1"
	var b bytes.Buffer
	b.WriteString(`# Generated by ` + "`make bundle`" + ` (hack/bundle). DO NOT EDIT.
# Run with: operator-sdk scorecard bundle/
apiVersion: scorecard.operatorframework.io/v1alpha3
kind: Configuration
metadata:
  name: config
stages:
- parallel: true
  tests:
`)
	for _, t := range []struct{ suite, test string }{
		{"basic", "basic-check-spec"},
		{"olm", "olm-bundle-validation"},
		{"olm", "olm-crds-have-validation"},
		{"olm", "olm-crds-have-resources"},
		{"olm", "olm-spec-descriptors"},
		{"olm", "olm-status-descriptors"},
	} {
		fmt.Fprintf(&b, "  - entrypoint:\n    - scorecard-test\n    - %s\n    image: %s\n    labels:\n      suite: %s\n      test: %s\n", t.test, image, t.suite, t.test)
	}
	return b.Bytes()
}
