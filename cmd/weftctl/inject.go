package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/controlplane/inject"
)

type injectOptions struct {
	file, version, registry, meshNamespace, trustDomain, logLevel, anchors string
	cfg                                                                    inject.Config
}

func (o *injectOptions) register(fs *flag.FlagSet) {
	o.cfg = inject.DefaultConfig()
	fs.StringVar(&o.file, "f", "", "manifests to inject (YAML or JSON, several documents allowed); - reads stdin")
	fs.StringVar(&o.version, "version", "", "mesh version (vX.Y.Z) whose proxy and control-plane revision to use")
	fs.StringVar(&o.registry, "registry", "ghcr.io/weftmesh", "image registry, with --version")
	fs.StringVar(&o.meshNamespace, "mesh-namespace", o.cfg.MeshNamespace, "namespace of the control plane")
	fs.StringVar(&o.trustDomain, "trust-domain", o.cfg.TrustDomain, "the mesh's trust domain")
	fs.StringVar(&o.logLevel, "proxy-log-level", o.cfg.LogLevel, "proxy log level")
	fs.StringVar(&o.cfg.ProxyImage, "proxy-image", o.cfg.ProxyImage, "proxy image (overrides --version's)")
	fs.StringVar(&o.anchors, "trust-anchors", "", "PEM file with the mesh's trust anchors (kubectl get cm weft-trust-bundle -n weft-system -o jsonpath='{.data.ca\\.crt}'); required: proxies verify the control plane with them")
}

// config resolves the flags into the injector's configuration, the same one
// the webhook of that mesh version would use.
func (o *injectOptions) config(setFlags map[string]bool) (inject.Config, error) {
	cfg := o.cfg
	cfg.MeshNamespace = o.meshNamespace
	cfg.TrustDomain = o.trustDomain
	cfg.LogLevel = o.logLevel
	if o.anchors == "" {
		return cfg, errors.New("--trust-anchors FILE is required: without the mesh's trust anchors an injected proxy cannot verify the control plane")
	}
	pem, err := os.ReadFile(o.anchors)
	if err != nil {
		return cfg, fmt.Errorf("--trust-anchors: %w", err)
	}
	cfg.TrustAnchorsPEM = string(pem)
	if o.version != "" {
		if !strings.HasPrefix(o.version, "v") || strings.Count(o.version, ".") != 2 {
			return cfg, fmt.Errorf("--version %q: want vMAJOR.MINOR.PATCH", o.version)
		}
		rev := revisionOf(o.version)
		cfg.Revision = rev
		if !setFlags["proxy-image"] {
			cfg.ProxyImage = o.registry + "/weft-proxy:" + o.version
		}
		_, port, _ := strings.Cut(cfg.ControlPlaneAddress, ":")
		cfg.ControlPlaneAddress = fmt.Sprintf("%s-%s.%s.svc:%s", controlPlaneName, rev, cfg.MeshNamespace, port)
	}
	return cfg, cfg.Validate()
}

// runInject injects the workloads of o.file; set names the flags given on
// the command line.
func runInject(o injectOptions, set map[string]bool, stdin io.Reader, stdout, stderr io.Writer) error {
	if o.file == "" {
		return errors.New("inject: -f FILE (or -f - for stdin) is required")
	}
	cfg, err := o.config(set)
	if err != nil {
		return err
	}
	in := stdin
	if o.file != "-" {
		f, err := os.Open(o.file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	docs, err := readDocuments(in)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(stdout)
	for i, doc := range docs {
		if err := injectDocument(doc, cfg, stderr); err != nil {
			return fmt.Errorf("document %d (%s %s): %w", i+1, doc.GetKind(), doc.GetName(), err)
		}
		b, err := yaml.Marshal(doc.Object)
		if err != nil {
			return err
		}
		if i > 0 {
			w.WriteString("---\n")
		}
		w.Write(b)
	}
	return w.Flush()
}

func readDocuments(r io.Reader) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bufio.NewReader(r), 4096)
	var out []*unstructured.Unstructured
	for n := 1; ; n++ {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("document %d: %w", n, err)
		}
		if len(obj) == 0 {
			continue // an empty document between two ---
		}
		u := &unstructured.Unstructured{Object: obj}
		if u.GetKind() == "" {
			return nil, fmt.Errorf("document %d has no kind", n)
		}
		out = append(out, u)
	}
}

// templatePath is where each workload kind keeps its pod template.
var templatePath = map[string][]string{
	"Deployment":            {"spec", "template"},
	"StatefulSet":           {"spec", "template"},
	"DaemonSet":             {"spec", "template"},
	"ReplicaSet":            {"spec", "template"},
	"ReplicationController": {"spec", "template"},
	"Job":                   {"spec", "template"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template"},
}

func injectDocument(u *unstructured.Unstructured, cfg inject.Config, stderr io.Writer) error {
	if u.GetKind() == "List" {
		items, _, _ := unstructured.NestedSlice(u.Object, "items")
		for i, it := range items {
			m, ok := it.(map[string]any)
			if !ok {
				continue
			}
			item := &unstructured.Unstructured{Object: m}
			if err := injectDocument(item, cfg, stderr); err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
			items[i] = item.Object
		}
		return unstructured.SetNestedSlice(u.Object, items, "items")
	}
	var tmpl map[string]any
	path, isWorkload := templatePath[u.GetKind()]
	switch {
	case u.GetKind() == "Pod":
		tmpl = u.Object
	case isWorkload:
		t, found, err := unstructured.NestedMap(u.Object, path...)
		if err != nil || !found {
			return fmt.Errorf("no pod template at .%s", strings.Join(path, "."))
		}
		tmpl = t
	default:
		return nil // not a workload: passed through unchanged
	}

	var pod corev1.Pod
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(tmpl, &pod, true); err != nil {
		return fmt.Errorf("pod template: %w", err)
	}
	if pod.Namespace == "" {
		pod.Namespace = u.GetNamespace()
	}
	// Asking for offline injection is the opt-in: the namespace counts as
	// injected, and only the pod's own opt-out and the exclusions apply.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: pod.Namespace, Labels: map[string]string{inject.LabelInject: inject.ValueEnabled}}}
	if ok, why := inject.Injectable(&pod, ns, cfg); !ok {
		fmt.Fprintf(stderr, "skipped %s %s: %s\n", u.GetKind(), u.GetName(), strings.Join(why, "; "))
		return nil
	}
	injected, err := inject.InjectObject(&pod, cfg)
	if err != nil {
		return err
	}
	spec, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&injected.Spec)
	if err != nil {
		return err
	}
	tmpl["spec"] = spec
	md, _, _ := unstructured.NestedMap(tmpl, "metadata")
	if md == nil {
		md = map[string]any{}
	}
	setStrings(md, "labels", injected.Labels)
	setStrings(md, "annotations", injected.Annotations)
	tmpl["metadata"] = md
	if isWorkload {
		if err := unstructured.SetNestedMap(u.Object, tmpl, path...); err != nil {
			return err
		}
	}
	return nil
}

func setStrings(m map[string]any, key string, v map[string]string) {
	if len(v) == 0 {
		return
	}
	out := make(map[string]any, len(v))
	for k, s := range v {
		out[k] = s
	}
	m[key] = out
}
