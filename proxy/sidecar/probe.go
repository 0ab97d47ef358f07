package sidecar

import (
	"context"
	"crypto/tls"
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

	"github.com/weftmesh/weft/pkg/meshconfig"
)

// The application-probe contract between the injector and the proxy lives
// in pkg/meshconfig, which both sides import.
const AppProbePathPrefix = meshconfig.AppProbePathPrefix

type (
	// AppProbe is meshconfig.AppProbe.
	AppProbe = meshconfig.AppProbe
	// AppProbeHeader is meshconfig.AppProbeHeader.
	AppProbeHeader = meshconfig.AppProbeHeader
)

// ParseAppProbes decodes and checks WEFT_APP_PROBES; see meshconfig.
func ParseAppProbes(env string) ([]AppProbe, error) { return meshconfig.ParseAppProbes(env) }

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
