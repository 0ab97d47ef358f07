package bundle

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/operator-framework/api/pkg/manifests"
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	"github.com/operator-framework/api/pkg/validation"
	"github.com/operator-framework/api/pkg/validation/errors"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/internal/testenv"
)

// justified lists validator warnings we accept, each with the reason. Any
// other warning or error fails the test.
var justified = map[string]string{}

// TestCommittedBundleValidates runs the validators OperatorHub runs on the
// committed bundle/ (the default bundle validators, OperatorHub v2 and good
// practices) for the Kubernetes version we test against.
func TestCommittedBundleValidates(t *testing.T) {
	dir := filepath.Join(testenv.RepoRoot(), "bundle")
	b, err := manifests.GetBundleFromDir(dir)
	if err != nil {
		t.Fatalf("loading %s: %v", dir, err)
	}
	objs := append(b.ObjectsToValidate(), map[string]string{"k8s-version": testenv.KubernetesVersion})
	validators := validation.DefaultBundleValidators.WithValidators(
		validation.OperatorHubV2Validator,
		validation.GoodPracticesValidator,
		validation.StandardCapabilitiesValidator,
		validation.StandardCategoriesValidator,
		validation.AlphaDeprecatedAPIsValidator,
	)
	for _, res := range validators.Validate(objs...) {
		for _, e := range res.Errors {
			t.Errorf("%s: error: %v", res.Name, e)
		}
		for _, w := range res.Warnings {
			if why, ok := justifiedFor(w); ok {
				t.Logf("%s: accepted warning (%s): %v", res.Name, why, w)
				continue
			}
			t.Errorf("%s: warning: %v", res.Name, w)
		}
	}
}

func justifiedFor(e errors.Error) (string, bool) {
	for sub, why := range justified {
		if strings.Contains(e.Error(), sub) {
			return why, true
		}
	}
	return "", false
}

// TestCSVContents checks what the validators do not: that the CSV carries
// the operator image, examples of every kind, and that OLM installs the
// operator cluster-wide with the RBAC controller-gen wrote.
func TestCSVContents(t *testing.T) {
	root := testenv.RepoRoot()
	files, err := Generate(Options{Root: root, Version: "1.2.3", Registry: "registry.example/weft", Channels: []string{"candidate"}, Replaces: "weft.v1.2.2", SkipRange: ">=1.0.0 <1.2.2"})
	if err != nil {
		t.Fatal(err)
	}
	var csv operatorsv1alpha1.ClusterServiceVersion
	if err := yaml.Unmarshal(files[filepath.Join("bundle", "manifests", "weft.clusterserviceversion.yaml")], &csv); err != nil {
		t.Fatal(err)
	}
	if csv.Name != "weft.v1.2.3" || csv.Spec.Replaces != "weft.v1.2.2" || csv.Annotations["olm.skipRange"] != ">=1.0.0 <1.2.2" {
		t.Errorf("name %q replaces %q skipRange %q", csv.Name, csv.Spec.Replaces, csv.Annotations["olm.skipRange"])
	}
	deps := csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs
	if len(deps) != 1 || deps[0].Spec.Template.Spec.Containers[0].Image != "registry.example/weft/weft:v1.2.3" {
		t.Errorf("operator deployment/image wrong: %+v", deps)
	}
	for _, im := range []string{"registry.example/weft/weft-controlplane:v1.2.3", "registry.example/weft/weft-proxy:v1.2.3"} {
		found := false
		for _, ri := range csv.Spec.RelatedImages {
			found = found || ri.Image == im
		}
		if !found {
			t.Errorf("relatedImages lack %s", im)
		}
	}
	for _, kind := range []string{`"kind": "MeshControlPlane"`, `"kind": "TrafficSplit"`, `"kind": "AuthorizationPolicy"`} {
		if !strings.Contains(csv.Annotations["alm-examples"], kind) {
			t.Errorf("alm-examples lack %s", kind)
		}
	}
	var all, cluster bool
	for _, m := range csv.Spec.InstallModes {
		if m.Type == operatorsv1alpha1.InstallModeTypeAllNamespaces {
			all = m.Supported
		}
	}
	for _, p := range csv.Spec.InstallStrategy.StrategySpec.ClusterPermissions {
		for _, r := range p.Rules {
			for _, res := range r.Resources {
				cluster = cluster || res == "meshcontrolplanes"
			}
		}
	}
	if !all || !cluster {
		t.Errorf("AllNamespaces supported %v, cluster RBAC for meshcontrolplanes %v", all, cluster)
	}
	if !strings.Contains(string(files[filepath.Join("bundle", "metadata", "annotations.yaml")]), "channel.default.v1: candidate") {
		t.Errorf("default channel not written")
	}
}

func TestGenerateRejectsBadInput(t *testing.T) {
	root := testenv.RepoRoot()
	if _, err := Generate(Options{Root: root, Version: "v1.0.0", Channels: []string{"stable"}}); err == nil || !strings.Contains(err.Error(), "semver") {
		t.Errorf("leading v: %v", err)
	}
	if _, err := Generate(Options{Root: root, Version: "1.0.0"}); err == nil {
		t.Error("no channel accepted")
	}
	if _, err := Generate(Options{Root: t.TempDir(), Version: "1.0.0", Channels: []string{"stable"}}); err == nil {
		t.Error("missing config/manifests accepted")
	}
}

// TestBundleDockerfileMatchesAnnotations: the image labels and the
// annotations file must say the same thing, or OLM and the registry disagree.
func TestBundleDockerfileMatchesAnnotations(t *testing.T) {
	root := testenv.RepoRoot()
	df, err := os.ReadFile(filepath.Join(root, "bundle.Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	ann, err := os.ReadFile(filepath.Join(root, "bundle", "metadata", "annotations.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var a struct{ Annotations map[string]string }
	if err := yaml.Unmarshal(ann, &a); err != nil {
		t.Fatal(err)
	}
	for k, v := range a.Annotations {
		if !strings.Contains(string(df), "LABEL "+k+"="+v+"\n") {
			t.Errorf("bundle.Dockerfile lacks LABEL %s=%s", k, v)
		}
	}
}
