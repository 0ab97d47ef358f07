package main

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
)

// The MeshControlPlane's namespace selector reaches the injector, so that a
// namespace the webhook is called for under a custom selector is injected.
func TestInjectorConfigNamespaceSelector(t *testing.T) {
	o := options{revision: "v1-0-0", namespace: "weft-system", grpcAddr: ":8090"}
	if cfg := injectorConfig(nil, o); cfg.NamespaceSelector != nil {
		t.Errorf("no MeshControlPlane: selector %v, want the default (nil)", cfg.NamespaceSelector)
	}
	mcp := &meshv1alpha1.MeshControlPlane{}
	mcp.Spec.Injection.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "shop"}}
	cfg := injectorConfig(mcp, o)
	if cfg.NamespaceSelector == nil || !cfg.NamespaceSelector.Matches(labels.Set{"team": "shop"}) ||
		cfg.NamespaceSelector.Matches(labels.Set{"mesh.weft.dev/inject": "enabled"}) {
		t.Errorf("selector = %v, want team=shop", cfg.NamespaceSelector)
	}
	mcp.Spec.Injection.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Bogus"}}}
	if cfg := injectorConfig(mcp, o); cfg.NamespaceSelector == nil || cfg.NamespaceSelector.Matches(labels.Set{"team": "shop"}) {
		t.Errorf("an unparsable selector gives %v, want one that selects nothing", cfg.NamespaceSelector)
	}
}

func TestInjectorConfigScrapeAnnotations(t *testing.T) {
	o := options{revision: "v1-0-0", namespace: "weft-system", grpcAddr: ":8090"}
	mcp := &meshv1alpha1.MeshControlPlane{}
	if !injectorConfig(nil, o).ScrapeAnnotations || !injectorConfig(mcp, o).ScrapeAnnotations {
		t.Error("scrape annotations are off by default, want on (the API's default is Enabled)")
	}
	mcp.Spec.Observability.ScrapeAnnotations = "Disabled"
	if injectorConfig(mcp, o).ScrapeAnnotations {
		t.Error("observability.scrapeAnnotations: Disabled is ignored")
	}
}

func TestInjectorConfigAccessLog(t *testing.T) {
	o := options{revision: "v1-0-0", namespace: "weft-system", grpcAddr: ":8090"}
	for format, want := range map[meshv1alpha1.AccessLogFormat]string{"": "", "Off": "", "Text": "text", "JSON": "json"} {
		mcp := &meshv1alpha1.MeshControlPlane{}
		mcp.Spec.Observability.AccessLog = format
		if got := injectorConfig(mcp, o).AccessLog; got != want {
			t.Errorf("accessLog %q → %q, want %q", format, got, want)
		}
	}
}

func TestInjectorConfigConcurrency(t *testing.T) {
	o := options{revision: "v1-0-0", namespace: "weft-system", grpcAddr: ":8090"}
	mcp := &meshv1alpha1.MeshControlPlane{}
	if got := injectorConfig(mcp, o).ProxyConcurrency; got != 0 {
		t.Errorf("unset concurrency → %d, want 0 (the proxy decides)", got)
	}
	mcp.Spec.Proxy.Concurrency = 3
	if got := injectorConfig(mcp, o).ProxyConcurrency; got != 3 {
		t.Errorf("proxy.concurrency 3 → %d", got)
	}
}
