package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ControlPlane is the health of the proxy's link to the control plane: the
// config stream and the workload certificate. A nil *ControlPlane records
// nothing, so callers need no checks.
type ControlPlane struct {
	connected  prometheus.Gauge
	reconnects prometheus.Counter
	snapshots  *prometheus.CounterVec
	certify    *prometheus.CounterVec
	expiry     prometheus.Gauge
	bundles    prometheus.Counter
}

// Results of a snapshot received from the control plane.
const (
	Applied  = "applied"
	Rejected = "rejected"
)

// NewControlPlane registers the control-plane collectors on reg.
func NewControlPlane(reg prometheus.Registerer) *ControlPlane {
	m := &ControlPlane{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_control_plane_connected", Help: "1 while the config stream to the control plane is open, else 0.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_control_plane_reconnects_total", Help: "Config streams opened again after one ended or failed.",
		}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_control_plane_snapshots_total", Help: "Snapshots received from the control plane, by result (applied or rejected).",
		}, []string{"result"}),
		certify: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_identity_certify_total", Help: "Certificate requests to the control plane, by result (ok or error).",
		}, []string{"result"}),
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_identity_cert_expiry_timestamp_seconds", Help: "Expiry of the workload certificate in use, Unix seconds (0 before the first one).",
		}),
		bundles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_identity_trust_bundle_updates_total", Help: "Trust bundles received from the control plane that replaced the previous one.",
		}),
	}
	reg.MustRegister(m.connected, m.reconnects, m.snapshots, m.certify, m.expiry, m.bundles)
	return m
}

// Connected records whether the config stream is open.
func (m *ControlPlane) Connected(up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.connected.Set(v)
}

// Reconnect counts a new config stream after the first.
func (m *ControlPlane) Reconnect() {
	if m != nil {
		m.reconnects.Inc()
	}
}

// Snapshot records a snapshot Applied or Rejected.
func (m *ControlPlane) Snapshot(result string) {
	if m != nil {
		m.snapshots.WithLabelValues(result).Inc()
	}
}

// Certify records a certificate request; on success notAfter is the new
// certificate's expiry.
func (m *ControlPlane) Certify(err error, notAfter time.Time) {
	if m == nil {
		return
	}
	if err != nil {
		m.certify.WithLabelValues("error").Inc()
		return
	}
	m.certify.WithLabelValues("ok").Inc()
	m.expiry.Set(float64(notAfter.Unix()))
}

// BundleUpdated counts a replaced trust bundle.
func (m *ControlPlane) BundleUpdated() {
	if m != nil {
		m.bundles.Inc()
	}
}
