package sidecar

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// AppProbePathPrefix is the admin path under which the kubelet's rewritten
// probes arrive: /app-probe/<container>/<kind>.
const AppProbePathPrefix = "/app-probe/"

// AppProbe is one of the application's original probes, as the injector
// writes it into WEFT_APP_PROBES (a JSON array; the injector's
// controlplane/inject.AppProbe is the other half of this contract).
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

// AppProbeHandler answers the kubelet's rewritten probes by performing the
// original ones against the application on 127.0.0.1. It only ever runs the
// configured probes: the path picks a probe, and nothing from the request
// (host, query, headers other than User-Agent) reaches the application, so
// it cannot be used as an open proxy.
type AppProbeHandler struct {
	probes map[string]AppProbe
	log    *slog.Logger
	// host is where the application is probed: always 127.0.0.1.
	host netip.Addr
	http *http.Client
}

// NewAppProbeHandler serves probes (from ParseAppProbes). Mount it on the
// admin mux at "GET /app-probe/". A nil logger discards.
func NewAppProbeHandler(probes []AppProbe, log *slog.Logger) *AppProbeHandler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &AppProbeHandler{
		probes: make(map[string]AppProbe, len(probes)),
		log:    log,
		host:   netip.AddrFrom4([4]byte{127, 0, 0, 1}),
		http: &http.Client{
			Transport: &http.Transport{
				// Like the kubelet, which does not verify the
				// application's certificate either.
				TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the kubelet's behaviour
				DisableKeepAlives: true,
				// Proxy stays nil: HTTP_PROXY must not send a probe elsewhere.
			},
			// A redirect is the application's answer, not a hop to take:
			// following it could reach anywhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	for _, p := range probes {
		h.probes[p.Container+"/"+p.Kind] = p
	}
	return h
}

// maxProbeBody is how much of the application's answer is passed on; the
// kubelet keeps only about 10 KiB of it for events.
const maxProbeBody = 10 << 10

func (h *AppProbeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key, ok := strings.CutPrefix(r.URL.Path, AppProbePathPrefix)
	p, known := h.probes[key]
	if !ok || !known {
		http.Error(w, "no such application probe", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	addr := net.JoinHostPort(h.host.String(), strconv.Itoa(int(p.Port)))
	switch p.Type {
	case "http":
		h.probeHTTP(ctx, w, r, p, addr)
	case "tcp":
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			h.fail(w, p, err)
			return
		}
		conn.Close()
		w.Write([]byte("ok\n"))
	case "grpc":
		h.probeGRPC(ctx, w, p, addr)
	}
}

func (h *AppProbeHandler) probeHTTP(ctx context.Context, w http.ResponseWriter, in *http.Request, p AppProbe, addr string) {
	u := strings.ToLower(p.Scheme) + "://" + addr + p.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err == nil && req.URL.Host != addr {
		// Cannot happen with a path that starts with "/", but this is the
		// line that keeps the handler from being a proxy to elsewhere.
		err = fmt.Errorf("probe URL %q does not address %s", u, addr)
	}
	if err != nil {
		h.fail(w, p, err)
		return
	}
	// The kubelet's defaults, then the probe's own headers, which may
	// override them (Host included).
	req.Header.Set("User-Agent", in.Header.Get("User-Agent"))
	req.Header.Set("Accept", "*/*")
	for _, hd := range p.Headers {
		if strings.EqualFold(hd.Name, "Host") {
			req.Host = hd.Value
			continue
		}
		req.Header.Add(hd.Name, hd.Value)
	}
	resp, err := h.http.Do(req)
	if err != nil {
		h.fail(w, p, err)
		return
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	// Location is deliberately not passed on: the kubelet would follow it to
	// the admin port. A 3xx without it counts as success, as the kubelet
	// counts a redirect it cannot follow.
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, io.LimitReader(resp.Body, maxProbeBody))
}

func (h *AppProbeHandler) probeGRPC(ctx context.Context, w http.ResponseWriter, p AppProbe, addr string) {
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		h.fail(w, p, err)
		return
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: p.Service})
	if err != nil {
		h.fail(w, p, err)
		return
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		h.fail(w, p, fmt.Errorf("gRPC health status %s", s))
		return
	}
	w.Write([]byte("SERVING\n"))
}

func (h *AppProbeHandler) fail(w http.ResponseWriter, p AppProbe, err error) {
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %ds: %w", max(p.TimeoutSeconds, 1), err)
	}
	h.log.Debug("Application probe failed", "container", p.Container, "kind", p.Kind, "type", p.Type, "port", p.Port, "error", err)
	http.Error(w, fmt.Sprintf("%s probe of container %s failed: %v", p.Kind, p.Container, err), http.StatusServiceUnavailable)
}
