package configserver

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the config server's Prometheus metrics.
type Metrics struct {
	connected      prometheus.Gauge
	snapshotsSent  prometheus.Counter
	bytesSent      prometheus.Counter
	acks           *prometheus.CounterVec
	compileSeconds prometheus.Histogram
}

// NewMetrics creates the metrics and registers them with reg (none when reg
// is nil, as in tests that do not look at them).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_controlplane_connected_proxies",
			Help: "Proxies connected to this replica's Config stream.",
		}),
		snapshotsSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_controlplane_snapshots_sent_total",
			Help: "Configuration snapshots sent to proxies.",
		}),
		bytesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_controlplane_snapshot_bytes_sent_total",
			Help: "Bytes of configuration snapshots sent to proxies.",
		}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_controlplane_snapshot_acks_total",
			Help: "Snapshot acknowledgements from proxies, by result (ack: applied, nack: rejected).",
		}, []string{"result"}),
		compileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weft_controlplane_compile_duration_seconds",
			Help:    "Time to compile the mesh configuration after a burst of changes.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	m.acks.WithLabelValues("ack")
	m.acks.WithLabelValues("nack")
	if reg != nil {
		reg.MustRegister(m.connected, m.snapshotsSent, m.bytesSent, m.acks, m.compileSeconds)
	}
	return m
}
