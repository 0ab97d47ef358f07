package inject

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
)

// Keys of the labels and annotations the injector reads and writes.
const (
	// LabelInject on a Namespace (value "enabled") injects all its pods
	// under the default namespace selector; "disabled" keeps the webhook
	// away from the namespace whatever the selector. On a Pod (as a label,
	// "enabled" or "disabled") it overrides the namespace's choice like the
	// annotation; "disabled" as a label also keeps the webhook away.
	LabelInject = "mesh.weft.dev/inject"
	// AnnotationInject on a Pod ("enabled" or "disabled") overrides the
	// namespace's choice for that pod, like the label; it wins over the
	// label when both are set.
	AnnotationInject = "mesh.weft.dev/inject"
	// AnnotationInjected marks an injected pod; its value is the revision.
	AnnotationInjected = "mesh.weft.dev/injected"
	// LabelRevision selects the pods of one control-plane revision (used by
	// the rollout and by the proxy's own environment).
	LabelRevision = "mesh.weft.dev/revision"

	AnnotationProxyCPURequest    = "mesh.weft.dev/proxy-cpu-request"
	AnnotationProxyCPULimit      = "mesh.weft.dev/proxy-cpu-limit"
	AnnotationProxyMemoryRequest = "mesh.weft.dev/proxy-memory-request"
	AnnotationProxyMemoryLimit   = "mesh.weft.dev/proxy-memory-limit"
	// AnnotationProxyConcurrency (a whole number, 1 to MaxProxyConcurrency)
	// sets the proxy's GOMAXPROCS for the pod; see Config.ProxyConcurrency.
	AnnotationProxyConcurrency  = "mesh.weft.dev/proxy-concurrency"
	AnnotationSkipInboundPorts  = "mesh.weft.dev/skip-inbound-ports"
	AnnotationSkipOutboundPorts = "mesh.weft.dev/skip-outbound-ports"
	// AnnotationRewriteProbes ("enabled", the default, or "disabled")
	// chooses whether the application's probes go through the proxy's
	// admin port or bypass the proxy on excluded ports.
	AnnotationRewriteProbes = "mesh.weft.dev/rewrite-probes"
	// AnnotationInjectSkipped is set by the webhook on a pod that asked for
	// the mesh (namespace label or pod annotation) but was not injected; its
	// value says why. The missed-pods controller need not report such pods.
	AnnotationInjectSkipped = "mesh.weft.dev/inject-skipped"

	// The de-facto Prometheus annotations that a stock Prometheus
	// kubernetes_sd scrape config reads; see Config.ScrapeAnnotations.
	AnnotationPrometheusScrape = "prometheus.io/scrape"
	AnnotationPrometheusPort   = "prometheus.io/port"
	AnnotationPrometheusPath   = "prometheus.io/path"

	ValueEnabled  = "enabled"
	ValueDisabled = "disabled"
)

// Names of what Inject adds to a pod.
const (
	ProxyContainerName = "weft-proxy"
	InitContainerName  = "weft-proxy-init"
	TokenVolumeName    = "weft-token"
	// TokenMountPath is where the proxy finds the token it presents with its
	// certificate signing request (file "token").
	TokenMountPath = "/var/run/secrets/mesh.weft.dev/serviceaccount"
)

// The proxy's environment. The proxy reads its identity and settings from
// these variables; the names are the contract with proxy/cmd/weft-proxy.
const (
	EnvPodName          = "WEFT_POD_NAME"
	EnvPodNamespace     = "WEFT_POD_NAMESPACE"
	EnvPodIP            = "WEFT_POD_IP"
	EnvServiceAccount   = "WEFT_SERVICE_ACCOUNT"
	EnvRevision         = "WEFT_REVISION"
	EnvControlPlaneAddr = "WEFT_CONTROL_PLANE_ADDR"
	EnvTrustDomain      = "WEFT_TRUST_DOMAIN"
	EnvLogLevel         = "WEFT_LOG_LEVEL"
	EnvAccessLog        = "WEFT_ACCESS_LOG"
	EnvInboundPort      = "WEFT_INBOUND_PORT"
	EnvOutboundPort     = "WEFT_OUTBOUND_PORT"
	EnvAdminPort        = "WEFT_ADMIN_PORT"
	EnvTokenPath        = "WEFT_TOKEN_PATH"
	// EnvTrustAnchors holds the PEM trust anchors the proxy verifies the
	// control plane with.
	EnvTrustAnchors = "WEFT_TRUST_ANCHORS"
	// EnvAppProbes holds the application's original probes as a JSON array
	// of AppProbe, for the proxy's /app-probe/ handler.
	EnvAppProbes = "WEFT_APP_PROBES"
)

// MaxProxyConcurrency bounds spec.proxy.concurrency and the annotation.
const MaxProxyConcurrency = 64

// Paths of the proxy's admin server used by the sidecar's own probes.
const (
	ProxyReadyPath = "/ready"
	ProxyLivePath  = "/live"
)

// Config is what the injector needs to know about the mesh. The caller maps
// the MeshControlPlane spec onto it; DefaultConfig gives the defaults.
type Config struct {
	ProxyImage      string
	ImagePullPolicy corev1.PullPolicy
	// ProxyUID is the UID (and GID) the proxy runs as; proxy-init exempts
	// its traffic from redirection, so no application may use it.
	ProxyUID     int64
	InboundPort  int32
	OutboundPort int32
	AdminPort    int32
	LogLevel     string
	// AccessLog is the proxies' access log format, "text" or "json"; empty
	// or "off" leaves it off.
	AccessLog string
	// Resources of the proxy, unless overridden by pod annotations.
	Resources corev1.ResourceRequirements
	// ProxyConcurrency, when above 0, is the proxy's GOMAXPROCS (passed
	// in $GOMAXPROCS) unless the pod's annotations say otherwise: its
	// concurrency, or its proxy CPU limit (the proxy then follows that).
	// At 0 the proxy uses its CPU limit rounded up, or 1 without a limit.
	ProxyConcurrency int32
	// InitResources of proxy-init, which only runs iptables-restore.
	InitResources corev1.ResourceRequirements
	// Revision of the control plane that injects (and that the proxy talks to).
	Revision string
	// MeshNamespace runs the control plane; its pods are never injected.
	MeshNamespace string
	// NamespaceSelector selects the namespaces whose pods are injected
	// (MeshControlPlane spec.injection.namespaceSelector); nil means the
	// default, namespaces labelled mesh.weft.dev/inject=enabled.
	NamespaceSelector   labels.Selector
	TrustDomain         string
	ControlPlaneAddress string
	// TokenAudience is the audience of the projected ServiceAccount token the
	// proxy presents to the identity service.
	TokenAudience          string
	TokenExpirationSeconds int64
	// Mesh-wide exclusions from interception, in proxy-init's syntax: ports
	// or ranges such as "25" or "8000-8100", and CIDRs.
	SkipInboundPorts  []string
	SkipOutboundPorts []string
	SkipOutboundCIDRs []string
	// ScrapeAnnotations announces the proxy's metrics (admin port,
	// /metrics) with the prometheus.io annotations, unless the pod has
	// prometheus.io annotations of its own.
	ScrapeAnnotations bool
	// TrustAnchorsPEM are the mesh's trust anchors (PEM CA certificates,
	// several during a rotation), given to the proxy in WEFT_TRUST_ANCHORS.
	// The webhook server fills it from the trust bundle for every request;
	// empty leaves the variable out (offline injection without a bundle).
	TrustAnchorsPEM string
}

// DefaultConfig returns the mesh defaults. The ports and UID match
// weft-proxy's and proxy-init's own defaults.
func DefaultConfig() Config {
	return Config{
		ProxyImage:      "ghcr.io/weftmesh/weft-proxy:latest",
		ImagePullPolicy: corev1.PullIfNotPresent,
		ProxyUID:        2102,
		InboundPort:     4143,
		OutboundPort:    4140,
		AdminPort:       4191,
		LogLevel:        "info",
		// The MeshControlPlane's default (observability.scrapeAnnotations).
		ScrapeAnnotations: true,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("50m"),
				corev1.ResourceMemory: resource.MustParse("64Mi"),
			},
			// No CPU limit: throttling a proxy adds latency to every request.
			Limits: corev1.ResourceList{
				corev1.ResourceMemory: resource.MustParse("256Mi"),
			},
		},
		InitResources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("16Mi"),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("100m"),
				corev1.ResourceMemory: resource.MustParse("64Mi"),
			},
		},
		Revision:               "stable",
		MeshNamespace:          "weft-system",
		TrustDomain:            "cluster.local",
		ControlPlaneAddress:    "weft-controlplane-stable.weft-system.svc:8090",
		TokenAudience:          "weft",
		TokenExpirationSeconds: 3600,
	}
}

// Validate catches a Config that would produce pods that cannot start or
// that escape the mesh; Inject calls it.
func (c Config) Validate() error {
	var errs []error
	if c.ProxyImage == "" {
		errs = append(errs, errors.New("proxy image is empty"))
	}
	if c.ProxyConcurrency < 0 || c.ProxyConcurrency > MaxProxyConcurrency {
		errs = append(errs, fmt.Errorf("proxy concurrency %d is outside 0 to %d", c.ProxyConcurrency, MaxProxyConcurrency))
	}
	if c.ProxyUID <= 0 {
		// Root is never exempted from redirection: that would exempt every
		// root process in every pod.
		errs = append(errs, fmt.Errorf("proxy UID %d must be above 0", c.ProxyUID))
	}
	ports := map[int32]string{}
	for _, p := range []struct {
		name string
		port int32
	}{{"inbound", c.InboundPort}, {"outbound", c.OutboundPort}, {"admin", c.AdminPort}} {
		if p.port < 1 || p.port > 65535 {
			errs = append(errs, fmt.Errorf("%s port %d is not a port", p.name, p.port))
		} else if other, dup := ports[p.port]; dup {
			errs = append(errs, fmt.Errorf("%s and %s ports are both %d", other, p.name, p.port))
		}
		ports[p.port] = p.name
	}
	if c.Revision == "" {
		errs = append(errs, errors.New("revision is empty"))
	}
	if c.TokenAudience == "" {
		errs = append(errs, errors.New("token audience is empty"))
	}
	if c.TrustAnchorsPEM != "" {
		if err := checkAnchors(c.TrustAnchorsPEM); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid injector configuration: %w", err)
	}
	return nil
}

// checkAnchors accepts PEM that holds only CA certificates, at least one:
// anything else would leave the proxy unable to verify the control plane,
// and a pod that cannot start is better caught at admission.
func checkAnchors(pemText string) error {
	if p := goodAnchors.Load(); p != nil && *p == pemText {
		return nil
	}
	if err := parseAnchors(pemText); err != nil {
		return err
	}
	goodAnchors.Store(&pemText)
	return nil
}

// goodAnchors remembers the last bundle that passed: the webhook validates
// the same bundle for every pod, and parsing it costs more than the rest of
// an injection.
var goodAnchors atomic.Pointer[string]

func parseAnchors(pemText string) error {
	rest := []byte(pemText)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("trust anchors: unexpected PEM block %q", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fmt.Errorf("trust anchors: certificate %d: %w", n+1, err)
		}
		if !cert.IsCA {
			return fmt.Errorf("trust anchors: certificate %d (%s) is not a CA", n+1, cert.Subject)
		}
		n++
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return errors.New("trust anchors: trailing data that is not PEM")
	}
	if n == 0 {
		return errors.New("trust anchors: no PEM certificate")
	}
	return nil
}
