package harness

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Counts is what a proxy's golden metrics say about one destination service
// at one moment: responses by success, and the latency histogram.
type Counts struct {
	OK, Failed float64
	// Buckets are cumulative counts by upper bound (seconds).
	Buckets map[float64]float64
}

// Scrape reads a proxy's /metrics on its admin port and returns the
// counters of the given direction ("outbound": what the pod called;
// "inbound": what called it) by destination service.
func Scrape(podIP string, direction string) (map[string]*Counts, error) {
	cl := &http.Client{Timeout: 5 * time.Second}
	res, err := cl.Get("http://" + podIP + ":4191/metrics")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	return parseGolden(res.Body, direction)
}

func parseGolden(r io.Reader, direction string) (map[string]*Counts, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parsing metrics: %w", err)
	}
	out := map[string]*Counts{}
	get := func(svc string) *Counts {
		c, ok := out[svc]
		if !ok {
			c = &Counts{Buckets: map[float64]float64{}}
			out[svc] = c
		}
		return c
	}
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	if f := families["weft_responses_total"]; f != nil {
		for _, m := range f.GetMetric() {
			if label(m, "direction") != direction {
				continue
			}
			c := get(label(m, "dst_service"))
			if code := label(m, "status_code"); strings.HasPrefix(code, "5") {
				c.Failed += m.GetCounter().GetValue()
			} else {
				c.OK += m.GetCounter().GetValue()
			}
		}
	}
	if f := families["weft_response_latency_seconds"]; f != nil {
		for _, m := range f.GetMetric() {
			if label(m, "direction") != direction {
				continue
			}
			c := get(label(m, "dst_service"))
			hasInf := false
			for _, b := range m.GetHistogram().GetBucket() {
				c.Buckets[b.GetUpperBound()] += float64(b.GetCumulativeCount())
				hasInf = hasInf || math.IsInf(b.GetUpperBound(), 1)
			}
			if !hasInf {
				c.Buckets[math.Inf(1)] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out, nil
}

// Golden are the golden signals of a service over an interval.
type Golden struct {
	Service     string
	RPS         float64
	SuccessRate float64 // 0..1; NaN without requests
	P50, P99    time.Duration
}

// Rates computes golden signals from two scrapes taken elapsed apart.
func Rates(before, after map[string]*Counts, elapsed time.Duration) []Golden {
	var out []Golden
	for svc, a := range after {
		b := before[svc]
		if b == nil {
			b = &Counts{Buckets: map[float64]float64{}}
		}
		ok, failed := a.OK-b.OK, a.Failed-b.Failed
		g := Golden{Service: svc, RPS: (ok + failed) / elapsed.Seconds(), SuccessRate: math.NaN()}
		if ok+failed > 0 {
			g.SuccessRate = ok / (ok + failed)
		}
		delta := map[float64]float64{}
		for ub, n := range a.Buckets {
			delta[ub] = n - b.Buckets[ub]
		}
		g.P50, g.P99 = quantile(delta, 0.5), quantile(delta, 0.99)
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}

// quantile estimates a quantile from cumulative bucket counts by linear
// interpolation inside the bucket, as Prometheus' histogram_quantile does.
func quantile(cum map[float64]float64, q float64) time.Duration {
	bounds := make([]float64, 0, len(cum))
	for ub := range cum {
		bounds = append(bounds, ub)
	}
	sort.Float64s(bounds)
	if len(bounds) == 0 {
		return 0
	}
	total := cum[bounds[len(bounds)-1]]
	if total <= 0 {
		return 0
	}
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for _, ub := range bounds {
		n := cum[ub]
		if n >= rank {
			if math.IsInf(ub, 1) {
				return time.Duration(prevBound * float64(time.Second))
			}
			frac := 0.0
			if n > prevCount {
				frac = (rank - prevCount) / (n - prevCount)
			}
			return time.Duration((prevBound + (ub-prevBound)*frac) * float64(time.Second))
		}
		prevBound, prevCount = ub, n
	}
	return 0
}

// Table renders golden signals as a fixed-width table.
func Table(gs []Golden) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-28s %8s %9s %9s %9s\n", "SERVICE", "RPS", "SUCCESS", "P50", "P99")
	for _, g := range gs {
		success := "-"
		if !math.IsNaN(g.SuccessRate) {
			success = fmt.Sprintf("%.1f%%", 100*g.SuccessRate)
		}
		fmt.Fprintf(&b, "%-28s %8.1f %9s %9s %9s\n", g.Service, g.RPS, success, g.P50.Round(10*time.Microsecond), g.P99.Round(10*time.Microsecond))
	}
	return b.String()
}
