package authz

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts decisions and refused requests. Every label value comes
// from the snapshot or a fixed set: port names, "http"/"tcp", Reason strings,
// httpguard reasons.
type Metrics struct {
	decisions *prometheus.CounterVec
	refused   *prometheus.CounterVec
}

// NewMetrics registers the authorization metrics on reg. Registering twice on
// the same registry returns the collectors already there.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_authz_decisions_total",
			Help: "Inbound authorization decisions, by port, protocol, decision and reason.",
		}, []string{"port", "protocol", "decision", "reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_http_refused_total",
			Help: "Inbound HTTP requests refused as malformed or ambiguous before authorization, by reason.",
		}, []string{"reason"}),
	}
	var err error
	if m.decisions, err = register(reg, m.decisions); err != nil {
		return nil, err
	}
	if m.refused, err = register(reg, m.refused); err != nil {
		return nil, err
	}
	return m, nil
}

func register(reg prometheus.Registerer, c *prometheus.CounterVec) (*prometheus.CounterVec, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing, nil
			}
		}
		return nil, err
	}
	return c, nil
}

// Observe counts one decision. port is a bounded label (the snapshot's port
// name or "unknown").
func (m *Metrics) Observe(port string, http bool, d Decision) {
	if m == nil {
		return
	}
	proto, decision := "tcp", "deny"
	if http {
		proto = "http"
	}
	if d.Allow {
		decision = "allow"
	}
	m.decisions.WithLabelValues(port, proto, decision, d.Reason.String()).Inc()
}

// Refused counts a request refused by httpguard; reason is its bounded
// Error.Reason.
func (m *Metrics) Refused(reason string) {
	if m == nil {
		return
	}
	m.refused.WithLabelValues(reason).Inc()
}

// Decisions returns the decision counter for a label set, for tests and
// diagnostics.
func (m *Metrics) Decisions(port, protocol, decision, reason string) prometheus.Counter {
	return m.decisions.WithLabelValues(port, protocol, decision, reason)
}
