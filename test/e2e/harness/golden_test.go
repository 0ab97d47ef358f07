package harness

import (
	"math"
	"strings"
	"testing"
	"time"
)

const sample = `# TYPE weft_responses_total counter
weft_responses_total{direction="outbound",dst_service="demo/web",peer_identity="x",status_code="200",tls="true"} 90
weft_responses_total{direction="outbound",dst_service="demo/web",peer_identity="x",status_code="503",tls="true"} 10
weft_responses_total{direction="inbound",dst_service="unknown",peer_identity="other",status_code="200",tls="true"} 7
# TYPE weft_response_latency_seconds histogram
weft_response_latency_seconds_bucket{direction="outbound",dst_service="demo/web",le="0.001"} 50
weft_response_latency_seconds_bucket{direction="outbound",dst_service="demo/web",le="0.01"} 99
weft_response_latency_seconds_bucket{direction="outbound",dst_service="demo/web",le="+Inf"} 100
weft_response_latency_seconds_sum{direction="outbound",dst_service="demo/web"} 0.2
weft_response_latency_seconds_count{direction="outbound",dst_service="demo/web"} 100
`

func TestGoldenSignals(t *testing.T) {
	after, err := parseGolden(strings.NewReader(sample), "outbound")
	if err != nil {
		t.Fatal(err)
	}
	gs := Rates(nil, after, 10*time.Second)
	if len(gs) != 1 || gs[0].Service != "demo/web" {
		t.Fatalf("%+v", gs)
	}
	g := gs[0]
	if g.RPS != 10 || math.Abs(g.SuccessRate-0.9) > 1e-9 {
		t.Errorf("rps %v success %v", g.RPS, g.SuccessRate)
	}
	if g.P50 != time.Millisecond {
		t.Errorf("p50 %v, want 1ms (the upper bound the median falls on)", g.P50)
	}
	if g.P99 != 10*time.Millisecond {
		t.Errorf("p99 %v, want 10ms", g.P99)
	}
	if !strings.Contains(Table(gs), "90.0%") {
		t.Errorf("table:\n%s", Table(gs))
	}
	if _, err := parseGolden(strings.NewReader("not metrics {"), "outbound"); err == nil {
		t.Error("garbage parsed")
	}
}
