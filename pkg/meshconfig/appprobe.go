package meshconfig

import (
	"encoding/json"
	"fmt"
	"strings"
)

// AppProbePathPrefix is the proxy admin path under which the kubelet's
// rewritten probes arrive: /app-probe/<container>/<kind>.
const AppProbePathPrefix = "/app-probe/"

// AppProbe is one of the application's original probes, which the injector
// moves to the proxy's admin port and hands to the proxy in WEFT_APP_PROBES
// (a JSON array of these). Both sides use this one definition.
type AppProbe struct {
	Container string `json:"container"`
	// Kind is liveness, readiness or startup.
	Kind string `json:"kind"`
	// Type is http, tcp or grpc.
	Type           string           `json:"type"`
	Port           int32            `json:"port"`
	Scheme         string           `json:"scheme,omitempty"`
	Path           string           `json:"path,omitempty"`
	Headers        []AppProbeHeader `json:"headers,omitempty"`
	Service        string           `json:"service,omitempty"`
	TimeoutSeconds int32            `json:"timeoutSeconds"`
}

// AppProbeHeader is a header the original httpGet probe sends.
type AppProbeHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// ParseAppProbes decodes and checks WEFT_APP_PROBES. An empty value means no
// probes. Every probe must target a valid port with a known type, kind and
// scheme, so that the handler never has to guess.
func ParseAppProbes(env string) ([]AppProbe, error) {
	if strings.TrimSpace(env) == "" {
		return nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(env))
	dec.DisallowUnknownFields()
	var probes []AppProbe
	if err := dec.Decode(&probes); err != nil {
		return nil, fmt.Errorf("WEFT_APP_PROBES is not a JSON array of probes: %w", err)
	}
	seen := map[string]bool{}
	for i, p := range probes {
		if err := p.validate(); err != nil {
			return nil, fmt.Errorf("WEFT_APP_PROBES[%d]: %w", i, err)
		}
		k := p.Container + "/" + p.Kind
		if seen[k] {
			return nil, fmt.Errorf("WEFT_APP_PROBES[%d]: duplicate probe %s", i, k)
		}
		seen[k] = true
	}
	return probes, nil
}

func (p AppProbe) validate() error {
	if p.Container == "" || strings.Contains(p.Container, "/") {
		return fmt.Errorf("container name %q is empty or has a slash", p.Container)
	}
	switch p.Kind {
	case "liveness", "readiness", "startup":
	default:
		return fmt.Errorf("probe kind %q is not liveness, readiness or startup", p.Kind)
	}
	if p.Port < 1 || p.Port > 65535 {
		return fmt.Errorf("port %d is not a port", p.Port)
	}
	if p.TimeoutSeconds < 0 {
		return fmt.Errorf("timeout %ds is negative", p.TimeoutSeconds)
	}
	switch p.Type {
	case "http":
		if p.Scheme != "HTTP" && p.Scheme != "HTTPS" {
			return fmt.Errorf("scheme %q is not HTTP or HTTPS", p.Scheme)
		}
		if p.Path != "" && !strings.HasPrefix(p.Path, "/") {
			return fmt.Errorf("path %q does not start with /", p.Path)
		}
		for _, h := range p.Headers {
			if h.Name == "" || strings.ContainsAny(h.Name, " :\r\n") || strings.ContainsAny(h.Value, "\r\n") {
				return fmt.Errorf("header %q is not a valid header", h.Name)
			}
		}
	case "tcp", "grpc":
	default:
		return fmt.Errorf("probe type %q is not http, tcp or grpc", p.Type)
	}
	return nil
}

// AppProbePath is the admin path the kubelet calls instead of the original
// probe of container's kind (liveness, readiness, startup).
func AppProbePath(container, kind string) string {
	return AppProbePathPrefix + container + "/" + kind
}
