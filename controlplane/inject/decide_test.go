package inject

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestInjectable(t *testing.T) {
	annotated := func(v string) *corev1.Pod {
		return with(func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationInject: v} })
	}
	for _, tc := range []struct {
		name       string
		pod        *corev1.Pod
		ns         *corev1.Namespace
		want       bool
		wantReason string
	}{
		{"unknown namespace, pod opts in", annotated(ValueEnabled), nil, true, "pod annotation"},
		{"unknown namespace, no opt-in", basePod(), nil, false, "neither"},
		{"pod opt-out beats the namespace label", annotated(ValueDisabled), meshedNS(), false, "inject=disabled"},
		{"unknown annotation value is not an opt-in", annotated("yes"), plainNS("shop"), false, `unknown value "yes"`},
		{"namespace label other than enabled", basePod(),
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{LabelInject: "true"}}}, false, "neither"},
		{"namespace from the request when the pod has none", with(func(p *corev1.Pod) { p.Namespace = "" }),
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-public", Labels: map[string]string{LabelInject: ValueEnabled}}}, false, "kube-public is a system namespace"},
		{"every exclusion is reported", with(func(p *corev1.Pod) {
			p.Namespace = "kube-system"
			p.Spec.HostNetwork = true
		}), nil, false, "system namespace|pod uses the host network"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reasons := Injectable(tc.pod, tc.ns, DefaultConfig())
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
