package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The per-request path must not allocate once its series exist.
func TestRequestDoesNotAllocate(t *testing.T) {
	m := New(prometheus.NewRegistry())
	m.Request(Outbound, "ns/svc", true, Other, 200, 0.001)
	m.ConnOpen(Outbound, "any")
	m.ConnClose(Outbound, "any")
	if n := testing.AllocsPerRun(100, func() {
		m.Request(Outbound, "ns/svc", true, Other, 200, 0.001)
		m.ConnOpen(Outbound, "any")
		m.ConnClose(Outbound, "any")
	}); n != 0 {
		t.Errorf("%v allocations per request", n)
	}
}

// Cached series count into the same children as the vectors.
func TestRequestCacheCountsEverySeries(t *testing.T) {
	m := New(prometheus.NewRegistry())
	for range 3 {
		m.Request(Outbound, "ns/a", false, None, 200, 0.001)
	}
	m.Request(Outbound, "ns/a", false, None, 503, 0.001)
	m.Request(Outbound, "ns/a", false, None, 999, 0.001)
	m.Request(Inbound, "ns/a", true, Other, 200, 0.001)
	for _, c := range []struct {
		got  float64
		want float64
	}{
		{testutil.ToFloat64(m.requests.WithLabelValues(Outbound, "ns/a", "false", None)), 5},
		{testutil.ToFloat64(m.responses.WithLabelValues(Outbound, "ns/a", "false", None, "200")), 3},
		{testutil.ToFloat64(m.responses.WithLabelValues(Outbound, "ns/a", "false", None, "503")), 1},
		{testutil.ToFloat64(m.responses.WithLabelValues(Outbound, "ns/a", "false", None, Other)), 1},
		{testutil.ToFloat64(m.requests.WithLabelValues(Inbound, "ns/a", "true", Other)), 1},
	} {
		if c.got != c.want {
			t.Errorf("got %v, want %v", c.got, c.want)
		}
	}
}

func BenchmarkRequest(b *testing.B) {
	m := New(prometheus.NewRegistry())
	b.ReportAllocs()
	for b.Loop() {
		m.Request(Outbound, "ns/svc", false, None, 200, 0.001)
	}
}
