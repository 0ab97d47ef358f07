package main

import (
	"net"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/inject"
	"github.com/weftmesh/weft/controlplane/inject/webhook"
)

// injectorConfig maps the MeshControlPlane and this revision's flags onto
// the injector's configuration: the proxy of this revision, pointed at this
// revision's Service, with the mesh's proxy defaults.
func injectorConfig(mcp *meshv1alpha1.MeshControlPlane, o options) inject.Config {
	cfg := inject.DefaultConfig()
	if o.proxyImage != "" {
		cfg.ProxyImage = o.proxyImage
	}
	cfg.Revision = o.revision
	cfg.MeshNamespace = o.namespace
	cfg.TrustDomain = o.trustDomain
	_, port, err := net.SplitHostPort(o.grpcAddr)
	if err != nil || port == "" || port == "0" {
		port = "8090"
	}
	cfg.ControlPlaneAddress = "weft-controlplane-" + o.revision + "." + o.namespace + ".svc:" + port
	if mcp == nil {
		return cfg
	}
	if sel := mcp.Spec.Injection.NamespaceSelector; sel != nil {
		// The API server validated the selector; one it still cannot parse
		// selects nothing, so that no pod is injected against the user's
		// intent (the missed-pods count shows them).
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			s = labels.Nothing()
		}
		cfg.NamespaceSelector = s
	}
	switch mcp.Spec.Observability.AccessLog {
	case "Text":
		cfg.AccessLog = "text"
	case "JSON":
		cfg.AccessLog = "json"
	}
	if mcp.Spec.Observability.ScrapeAnnotations == "Disabled" {
		cfg.ScrapeAnnotations = false
	}
	p := mcp.Spec.Proxy
	if p.LogLevel != "" {
		cfg.LogLevel = string(p.LogLevel)
	}
	if len(p.Resources.Requests) > 0 || len(p.Resources.Limits) > 0 {
		cfg.Resources = *p.Resources.DeepCopy()
	}
	cfg.ProxyConcurrency = p.Concurrency
	for _, port := range p.SkipInboundPorts {
		cfg.SkipInboundPorts = append(cfg.SkipInboundPorts, strconv.Itoa(int(port)))
	}
	for _, port := range p.SkipOutboundPorts {
		cfg.SkipOutboundPorts = append(cfg.SkipOutboundPorts, strconv.Itoa(int(port)))
	}
	return cfg
}

// injector serves the webhook with a Handler rebuilt whenever the
// MeshControlPlane changes, so new proxy defaults apply to the next pod
// without restarting the control plane.
type injector struct {
	current atomic.Pointer[webhook.Handler]
	base    webhook.Handler
	o       options
}

func (i *injector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i.current.Load().ServeHTTP(w, r)
}

// update installs the configuration of mcp (nil: defaults).
func (i *injector) update(mcp *meshv1alpha1.MeshControlPlane) {
	h := i.base
	h.Config = injectorConfig(mcp, i.o)
	i.current.Store(&h)
}

// addInjector registers the webhook server with the manager; every replica
// admits pods. The MeshControlPlane is read through the manager's cache.
func addInjector(mgr manager.Manager, o options, log logr.Logger) (*injector, error) {
	inj := &injector{o: o, base: webhook.Handler{
		TrustAnchors: webhook.ConfigMapTrustAnchors(mgr.GetClient(), o.namespace),
		Namespaces:   mgr.GetClient(),
		APIReader:    mgr.GetAPIReader(),
		Log:          log.WithName("injector"),
	}}
	inj.update(nil)
	if o.webhookAddr == "0" {
		// Disabled, like --health-addr=0 and --metrics-addr=0 (tests, and
		// a replica that only serves proxies).
		return inj, nil
	}
	srv := &webhook.Server{Addr: o.webhookAddr, CertDir: o.webhookCertDir, Handler: inj, Log: log.WithName("webhook")}
	if err := mgr.Add(srv); err != nil {
		return nil, err
	}
	return inj, nil
}
