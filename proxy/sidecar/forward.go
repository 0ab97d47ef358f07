package sidecar

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"sync"
	"time"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/route"
	"github.com/weftmesh/weft/proxy/upstream"
)

// errNoEndpoint answers 503: the destination has no ready endpoint.
var errNoEndpoint = errors.New("no endpoint available")

// DefaultForwarder sends every request to the port's DefaultBackends:
// weighted random over backends, round robin over each backend's endpoints.
// It stands in until proxy/route is plugged in.
func DefaultForwarder(_ *meshconfig.Service, port *meshconfig.ServicePort, pool *upstream.Pool) http.Handler {
	lb := newBalancer(port.DefaultBackends)
	return newReverseProxy(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		ep, ok := lb.pick()
		if !ok {
			return nil, errNoEndpoint
		}
		return pool.RoundTripper(ep).RoundTrip(r)
	}), nil)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// bufPool gives the upgrade proxy (a ReverseProxy) reusable 32 KiB buffers
// for the bodies of upgrade requests answered without a switch of
// protocols, instead of a new one per response; a switched connection is
// copied by ReverseProxy itself, and relay's own bodies by package
// bodycopy.
type bufPool struct{ p sync.Pool }

func (b *bufPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufPool) Put(v []byte) { b.p.Put(&v) }

var copyBuffers = &bufPool{}

// newReverseProxy returns a transparent reverse proxy: no X-Forwarded
// headers, Host kept, trailers and Upgrade passed through. rewrite may
// adjust the outgoing request (set its URL); when nil the URL host is the
// client's Host and the transport decides where to dial.
//
// Bodies of unknown length (gRPC, server-sent events, chunked streams) are
// flushed as they arrive: ReverseProxy does that by itself for them. The
// FlushInterval must stay 0 for everything else: a negative value also
// makes ReverseProxy flush the response headers from a timer goroutine,
// which races with the handler's return. For a response that ended with its
// headers (a gRPC error is such a trailers-only response) that early flush
// sends the headers without END_STREAM and ends the stream with an empty
// DATA frame, so the grpc-status lands in headers instead of trailers and
// the client fails with "server closed the stream without sending
// trailers".
func newReverseProxy(rt http.RoundTripper, rewrite func(*httputil.ProxyRequest)) http.Handler {
	return &relay{rt: rt, rewrite: rewrite, upgrade: newUpgradeProxy(rt, rewrite)}
}

// newUpgradeProxy is httputil.ReverseProxy set up like relay, for requests
// that upgrade the connection.
func newUpgradeProxy(rt http.RoundTripper, rewrite func(*httputil.ProxyRequest)) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			if pr.Out.URL.Host == "" {
				pr.Out.URL.Host = pr.In.Host
			}
			if rewrite != nil {
				rewrite(pr)
			}
		},
		Transport:     rt,
		FlushInterval: 0,
		BufferPool:    copyBuffers,
		ErrorLog:      nil,
		ErrorHandler:  proxyError,
	}
}

// proxyError maps an upstream failure to the status a client sees.
func proxyError(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusBadGateway
	switch {
	case errors.Is(err, errNoEndpoint):
		code = http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		code = http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this answer.
		code = 499
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		code = http.StatusGatewayTimeout
	}
	if code != 499 {
		slog.Default().Debug("Upstream failed", "host", r.Host, "path", r.URL.Path, "err", err)
	}
	var op *net.OpError
	if code == http.StatusBadGateway && errors.As(err, &op) && op.Op == "dial" {
		// Nothing was sent: a calling proxy may retry another endpoint.
		w.Header().Set(route.HeaderNotSent, "1")
	}
	w.WriteHeader(code)
}

// statusWriter records the status and when the response headers went out.
type statusWriter struct {
	http.ResponseWriter
	code int
	at   time.Time
	obs  upstream.Observed // for serveOutbound
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 && code >= 200 {
		s.code, s.at = code, time.Now()
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code, s.at = http.StatusOK, time.Now()
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush, Hijack and full duplex.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
