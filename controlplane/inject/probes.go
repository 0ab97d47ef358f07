package inject

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

// The kinds of probe, as they appear in the proxy's /app-probe/ paths and in
// WEFT_APP_PROBES.
const (
	ProbeLiveness  = "liveness"
	ProbeReadiness = "readiness"
	ProbeStartup   = "startup"
)

// The probe contract with the proxy (pkg/meshconfig).
const AppProbePathPrefix = meshconfig.AppProbePathPrefix

type (
	// AppProbe is meshconfig.AppProbe.
	AppProbe = meshconfig.AppProbe
	// AppProbeHeader is meshconfig.AppProbeHeader.
	AppProbeHeader = meshconfig.AppProbeHeader
)

// AppProbePath is the admin path the kubelet calls instead of the original
// probe.
func AppProbePath(container, kind string) string { return meshconfig.AppProbePath(container, kind) }

// probeRewrite is the outcome of rewriteProbes: patch operations that
// replace the application's probes, what the proxy must do in their place,
// and the ports of the probes left alone, which must then bypass the proxy.
type probeRewrite struct {
	ops       Patch
	probes    []AppProbe
	skipPorts []string
}

// rewriteProbes points the application's probes at the proxy's admin port.
//
// Why: with the mesh, the kubelet's probes arrive at the pod IP like any
// other client and would be redirected to the proxy's inbound port, where
// they fail strict mTLS. Excluding the probe ports from redirection instead
// would leave those ports reachable by anyone without mTLS or authorization
// (often the serving port itself). The admin port is excluded from
// redirection anyway, so the kubelet reaches the proxy there and the proxy
// repeats the original probe against 127.0.0.1.
//
// httpGet, tcpSocket and grpc probes are all rewritten; the proxy turns the
// result of a TCP connect or a gRPC health check into an HTTP status. Probes
// with a host of their own (they do not target the pod) and exec probes are
// left alone. A named port that names no container port cannot be resolved;
// the probe is left alone (it fails as it would without the mesh) and nothing
// is excluded for it.
//
// With rewrite disabled (annotation mesh.weft.dev/rewrite-probes=disabled),
// the probe ports are excluded from inbound redirection, as before.
func rewriteProbes(pod *corev1.Pod, cfg Config, rewrite bool) probeRewrite {
	var out probeRewrite
	type list struct {
		path       string
		containers []corev1.Container
	}
	for _, l := range []list{{"/spec/initContainers", pod.Spec.InitContainers}, {"/spec/containers", pod.Spec.Containers}} {
		for i, c := range l.containers {
			for _, k := range []struct {
				kind, field string
				probe       *corev1.Probe
			}{
				{ProbeLiveness, "livenessProbe", c.LivenessProbe},
				{ProbeReadiness, "readinessProbe", c.ReadinessProbe},
				{ProbeStartup, "startupProbe", c.StartupProbe},
			} {
				if k.probe == nil {
					continue
				}
				ap, ok := appProbe(c, k.kind, k.probe)
				if !ok {
					continue
				}
				if !rewrite {
					out.skipPorts = append(out.skipPorts, strconv.Itoa(int(ap.Port)))
					continue
				}
				out.probes = append(out.probes, ap)
				p := k.probe.DeepCopy()
				p.ProbeHandler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Path:   AppProbePath(c.Name, k.kind),
					Port:   intstr.FromInt32(cfg.AdminPort),
					Scheme: corev1.URISchemeHTTP,
				}}
				out.ops = append(out.ops, Operation{
					Op:    "replace",
					Path:  fmt.Sprintf("%s/%d/%s", l.path, i, k.field),
					Value: p,
				})
			}
		}
	}
	return out
}

// appProbe describes probe for the proxy; false when the probe does not go
// to the pod's network or its port cannot be resolved.
func appProbe(c corev1.Container, kind string, probe *corev1.Probe) (AppProbe, bool) {
	ap := AppProbe{Container: c.Name, Kind: kind, TimeoutSeconds: probe.TimeoutSeconds}
	if ap.TimeoutSeconds <= 0 {
		ap.TimeoutSeconds = 1
	}
	switch {
	case probe.HTTPGet != nil:
		h := probe.HTTPGet
		if h.Host != "" {
			return ap, false
		}
		ap.Type, ap.Port, ap.Path = "http", resolvePort(c, &h.Port), h.Path
		if !strings.HasPrefix(ap.Path, "/") {
			// The kubelet requests "healthz" as "/healthz".
			ap.Path = "/" + ap.Path
		}
		ap.Scheme = string(h.Scheme)
		if ap.Scheme == "" {
			ap.Scheme = string(corev1.URISchemeHTTP)
		}
		for _, hd := range h.HTTPHeaders {
			ap.Headers = append(ap.Headers, AppProbeHeader{Name: hd.Name, Value: hd.Value})
		}
	case probe.TCPSocket != nil:
		if probe.TCPSocket.Host != "" {
			return ap, false
		}
		ap.Type, ap.Port = "tcp", resolvePort(c, &probe.TCPSocket.Port)
	case probe.GRPC != nil:
		ap.Type, ap.Port = "grpc", probe.GRPC.Port
		if probe.GRPC.Service != nil {
			ap.Service = *probe.GRPC.Service
		}
	default:
		return ap, false
	}
	return ap, ap.Port > 0 && ap.Port <= 65535
}

// appProbesEnv encodes probes for WEFT_APP_PROBES.
func appProbesEnv(probes []AppProbe) (string, error) {
	b, err := json.Marshal(probes)
	if err != nil {
		return "", fmt.Errorf("encoding the application probes: %w", err)
	}
	return string(b), nil
}

// resolvePort turns a probe port (a number or a container port's name) into
// a number; 0 when it names no port, which the kubelet would reject anyway.
func resolvePort(c corev1.Container, p *intstr.IntOrString) int32 {
	if p == nil {
		return 0
	}
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return 0
}
