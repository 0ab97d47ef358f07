package inject

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func TestInjectable(t *testing.T) {
	annotated := func(v string) *corev1.Pod {
		return with(func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationInject: v} })
	}
	labelled := func(v string) *corev1.Pod {
		return with(func(p *corev1.Pod) { p.Labels = map[string]string{LabelInject: v} })
	}
	team := func(labels map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: labels}}
	}
	teamSelector := labels.SelectorFromSet(labels.Set{"team": "shop"})
	for _, tc := range []struct {
		name       string
		pod        *corev1.Pod
		ns         *corev1.Namespace
		want       bool
		wantReason string
		selector   labels.Selector
	}{
		{name: "unknown namespace, pod opts in", pod: annotated(ValueEnabled), want: true, wantReason: "pod annotation"},
		{name: "unknown namespace, no opt-in", pod: basePod(), wantReason: "does not match the injection selector mesh.weft.dev/inject=enabled"},
		{name: "pod label opts in", pod: labelled(ValueEnabled), ns: plainNS("shop"), want: true, wantReason: "pod label mesh.weft.dev/inject=enabled"},
		{name: "pod label opts out", pod: labelled(ValueDisabled), ns: meshedNS(), wantReason: "pod label mesh.weft.dev/inject=disabled"},
		{name: "the annotation wins over the label", pod: with(func(p *corev1.Pod) {
			p.Labels = map[string]string{LabelInject: ValueEnabled}
			p.Annotations = map[string]string{AnnotationInject: ValueDisabled}
		}), ns: meshedNS(), wantReason: "pod annotation mesh.weft.dev/inject=disabled"},
		{name: "misspelt label", pod: labelled("true"), ns: plainNS("shop"), wantReason: `pod label mesh.weft.dev/inject has unknown value "true"`},
		{name: "custom selector selects the namespace", pod: basePod(), ns: team(map[string]string{"team": "shop"}),
			selector: teamSelector, want: true, wantReason: "matches the injection selector team=shop"},
		{name: "custom selector: the default label alone does not select", pod: basePod(), ns: meshedNS(),
			selector: teamSelector, wantReason: "does not match the injection selector team=shop"},
		{name: "a namespace labelled disabled is never selected", pod: basePod(),
			ns:       team(map[string]string{"team": "shop", LabelInject: ValueDisabled}),
			selector: teamSelector, wantReason: "does not match"},
		{name: "custom selector, pod opts in elsewhere", pod: annotated(ValueEnabled), ns: plainNS("other"),
			selector: teamSelector, want: true, wantReason: "pod annotation"},
		{name: "pod opt-out beats the namespace label", pod: annotated(ValueDisabled), ns: meshedNS(), wantReason: "inject=disabled"},
		{name: "unknown annotation value is not an opt-in", pod: annotated("yes"), ns: plainNS("shop"), wantReason: `unknown value "yes"`},
		{name: "namespace label other than enabled", pod: basePod(),
			ns: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{LabelInject: "true"}}}, wantReason: "does not match"},
		{name: "namespace from the request when the pod has none", pod: with(func(p *corev1.Pod) { p.Namespace = "" }),
			ns: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-public", Labels: map[string]string{LabelInject: ValueEnabled}}}, wantReason: "kube-public is a system namespace"},
		{name: "every exclusion is reported", pod: with(func(p *corev1.Pod) {
			p.Namespace = "kube-system"
			p.Spec.HostNetwork = true
		}), wantReason: "system namespace|pod uses the host network"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.NamespaceSelector = tc.selector
			got, reasons := Injectable(tc.pod, tc.ns, cfg)
			if got != tc.want {
				t.Errorf("Injectable() = %v (%v), want %v", got, reasons, tc.want)
			}
			joined := strings.Join(reasons, "|")
			for _, want := range strings.Split(tc.wantReason, "|") {
				if !strings.Contains(joined, want) {
					t.Errorf("reasons %q lack %q", reasons, want)
				}
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mut     func(*Config)
		wantErr string
	}{
		{"defaults", func(*Config) {}, ""},
		{"no image", func(c *Config) { c.ProxyImage = "" }, "proxy image is empty"},
		{"root proxy", func(c *Config) { c.ProxyUID = 0 }, "proxy UID 0 must be above 0"},
		{"same ports", func(c *Config) { c.AdminPort = c.InboundPort }, "inbound and admin ports are both 4143"},
		{"port out of range", func(c *Config) { c.OutboundPort = 70000 }, "outbound port 70000 is not a port"},
		{"no revision", func(c *Config) { c.Revision = "" }, "revision is empty"},
		{"concurrency too high", func(c *Config) { c.ProxyConcurrency = 65 }, "proxy concurrency 65 is outside 0 to 64"},
		{"trust anchors", func(c *Config) { c.TrustAnchorsPEM = trustAnchors() + trustAnchors() }, ""},
		{"trust anchors not PEM", func(c *Config) { c.TrustAnchorsPEM = "root" }, "trust anchors: trailing data that is not PEM"},
		{"trust anchors with a key", func(c *Config) {
			c.TrustAnchorsPEM = trustAnchors() + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
		}, `unexpected PEM block "PRIVATE KEY"`},
		{"trust anchors garbage certificate", func(c *Config) {
			c.TrustAnchorsPEM = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
		}, "trust anchors: certificate 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mut(&cfg)
			_, err := Inject(basePod(), cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Inject() error = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Inject() error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
