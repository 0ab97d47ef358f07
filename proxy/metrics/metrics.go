// Package metrics defines the proxy's golden metrics (requests, responses,
// latency, TCP connections and bytes) on a registry the caller passes in.
//
// Cardinality is bounded by construction: every label value is either a name
// taken from the configuration snapshot or a fixed fallback. Nothing a client
// sends (paths, hosts, arbitrary status codes) becomes a label value. It must
// not register on the global default registry.
package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Fixed label values.
const (
	Unknown  = "unknown"
	Other    = "other"
	Inbound  = "inbound"
	Outbound = "outbound"
	// None is the peer identity of a plaintext connection.
	None = ""
)

// Metrics is the proxy's set of collectors.
type Metrics struct {
	requests  *prometheus.CounterVec
	responses *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	tcpOpen   *prometheus.CounterVec
	tcpClose  *prometheus.CounterVec
	tcpActive *prometheus.GaugeVec
	tcpBytes  *prometheus.CounterVec
	refused   *prometheus.CounterVec
	idle      *prometheus.CounterVec
	reloads   *prometheus.CounterVec

	idMu sync.RWMutex
	ids  map[string]struct{} // identities allowed as label values

	// series caches the request collectors per label set, so that a
	// request costs a map lookup instead of three label hashes and
	// checks (WithLabelValues). Label values are bounded (see the package
	// comment), and no series is ever deleted, so neither is this.
	series cowMap[seriesKey, *series]
	conns  cowMap[[2]string, *connSeries] // direction, protocol
}

type connSeries struct {
	open, close prometheus.Counter
	active      prometheus.Gauge
}

func (m *Metrics) connSeries(dir, proto string) *connSeries {
	return m.conns.get([2]string{dir, proto}, func() *connSeries {
		return &connSeries{
			open:   m.tcpOpen.WithLabelValues(dir, proto),
			close:  m.tcpClose.WithLabelValues(dir, proto),
			active: m.tcpActive.WithLabelValues(dir),
		}
	})
}

// cowMap is a map read without locks and copied on write, for caches that
// fill once and are then only read.
type cowMap[K comparable, V any] struct {
	mu sync.Mutex
	m  atomic.Pointer[map[K]V]
}

// get returns the value for k, creating it with mk on the first call.
func (c *cowMap[K, V]) get(k K, mk func() V) V {
	if p := c.m.Load(); p != nil {
		if v, ok := (*p)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[K]V
	if p := c.m.Load(); p != nil {
		if v, ok := (*p)[k]; ok {
			return v
		}
		old = *p
	}
	next := make(map[K]V, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	v := mk()
	next[k] = v
	c.m.Store(&next)
	return v
}

type seriesKey struct{ dir, svc, tls, peer string }

type series struct {
	requests prometheus.Counter
	latency  prometheus.Observer
	// responses by status code (0 for Other).
	responses cowMap[int, prometheus.Counter]
}

// New registers the collectors on reg.
func New(reg prometheus.Registerer) *Metrics {
	dst := []string{"direction", "dst_service", "tls", "peer_identity"}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_requests_total", Help: "HTTP requests received, by direction and destination.",
		}, dst),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_responses_total", Help: "HTTP responses sent, by status code (502/503/504 for proxy errors).",
		}, append(dst, "status_code")),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "weft_response_latency_seconds",
			Help:    "Time from request received to response headers written.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"direction", "dst_service"}),
		tcpOpen: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_tcp_open_total", Help: "TCP connections accepted.",
		}, []string{"direction", "protocol"}),
		tcpClose: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_tcp_close_total", Help: "TCP connections closed.",
		}, []string{"direction", "protocol"}),
		tcpActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_tcp_connections", Help: "TCP connections open now.",
		}, []string{"direction"}),
		tcpBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_tcp_bytes_total", Help: "Bytes forwarded by opaque TCP connections, counted at close.",
		}, []string{"direction", "dst_service", "tls", "peer_identity", "flow"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_connections_refused_total", Help: "Connections refused, by reason.",
		}, []string{"direction", "reason"}),
		idle: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_tcp_idle_closed_total", Help: "Opaque TCP connections and upgraded tunnels closed after carrying no data for the TCP idle timeout.",
		}, []string{"direction"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_reloads_total", Help: "Configuration and identity reloads, by what and result.",
		}, []string{"what", "result"}),
		ids: map[string]struct{}{},
	}
	reg.MustRegister(m.requests, m.responses, m.latency, m.tcpOpen, m.tcpClose, m.tcpActive, m.tcpBytes, m.refused, m.idle, m.reloads)
	return m
}

// SetIdentities replaces the identities that may appear as peer_identity
// (those named in the snapshot); any other identity is reported as Other.
func (m *Metrics) SetIdentities(ids []string) {
	set := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		set[id] = struct{}{}
	}
	m.idMu.Lock()
	m.ids = set
	m.idMu.Unlock()
}

// Identity maps a peer identity to a bounded label value.
func (m *Metrics) Identity(id string) string {
	if id == "" {
		return None
	}
	m.idMu.RLock()
	_, ok := m.ids[id]
	m.idMu.RUnlock()
	if ok {
		return id
	}
	return Other
}

// Status maps a status code to a bounded label value.
func Status(code int) string {
	if code < 100 || code > 599 {
		return Other
	}
	return strconv.Itoa(code)
}

func tlsLabel(tls bool) string {
	if tls {
		return "true"
	}
	return "false"
}

// Request records one HTTP request and its response. peer must already be
// bounded (Identity).
func (m *Metrics) Request(dir, svc string, tls bool, peer string, code int, seconds float64) {
	k := seriesKey{dir, svc, tlsLabel(tls), peer}
	s := m.series.get(k, func() *series {
		return &series{
			requests: m.requests.WithLabelValues(dir, svc, k.tls, peer),
			latency:  m.latency.WithLabelValues(dir, svc),
		}
	})
	s.requests.Inc()
	i := code
	if code < 100 || code > 599 {
		i = 0
	}
	s.responses.get(i, func() prometheus.Counter {
		return m.responses.WithLabelValues(dir, svc, k.tls, peer, Status(code))
	}).Inc()
	s.latency.Observe(seconds)
}

// ConnOpen records an accepted connection.
func (m *Metrics) ConnOpen(dir, proto string) {
	s := m.connSeries(dir, proto)
	s.open.Inc()
	s.active.Inc()
}

// ConnClose records a closed connection.
func (m *Metrics) ConnClose(dir, proto string) {
	s := m.connSeries(dir, proto)
	s.close.Inc()
	s.active.Dec()
}

// TCPBytes records the bytes of one finished opaque connection.
func (m *Metrics) TCPBytes(dir, svc string, tls bool, peer string, sent, received int64) {
	t := tlsLabel(tls)
	m.tcpBytes.WithLabelValues(dir, svc, t, peer, "to_server").Add(float64(sent))
	m.tcpBytes.WithLabelValues(dir, svc, t, peer, "to_client").Add(float64(received))
}

// Refused records a connection the proxy closed without serving it; reason
// is one of a few constants chosen by the caller.
func (m *Metrics) Refused(dir, reason string) { m.refused.WithLabelValues(dir, reason).Inc() }

// IdleClosed counts a tunnel closed by the TCP idle timeout.
func (m *Metrics) IdleClosed(dir string) { m.idle.WithLabelValues(dir).Inc() }

// IdleClosedCounter returns IdleClosed's counter of dir, for tests.
func (m *Metrics) IdleClosedCounter(dir string) prometheus.Counter {
	return m.idle.WithLabelValues(dir)
}

// Reload records a reload attempt of "snapshot" or "identity".
func (m *Metrics) Reload(what string, err error) {
	r := "ok"
	if err != nil {
		r = "error"
	}
	m.reloads.WithLabelValues(what, r).Inc()
}

// ReloadCounter returns the counter of reloads of what with result ("ok" or
// "error"), for tests and diagnostics.
func (m *Metrics) ReloadCounter(what, result string) prometheus.Counter {
	return m.reloads.WithLabelValues(what, result)
}
