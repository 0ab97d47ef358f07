package configserver

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the config server's Prometheus metrics.
type Metrics struct {
	connected      prometheus.Gauge
	snapshotsSent  prometheus.Counter
	deltasSent     prometheus.Counter
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
		deltasSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_controlplane_snapshot_deltas_sent_total",
			Help: "Snapshots sent to proxies as a delta against one they held (counted in weft_controlplane_snapshots_sent_total too).",
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
		m.connected = register(reg, m.connected)
		m.snapshotsSent = register(reg, m.snapshotsSent)
		m.deltasSent = register(reg, m.deltasSent)
		m.bytesSent = register(reg, m.bytesSent)
		m.acks = register(reg, m.acks)
		m.compileSeconds = register(reg, m.compileSeconds)
	}
	return m
}

// register adds c to reg, or returns the collector already registered under
// its name (a control plane restarted within one process, as in tests), so
// the series continue instead of panicking.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
