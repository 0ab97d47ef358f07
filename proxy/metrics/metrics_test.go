package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestBoundedLabels: whatever identities and codes arrive, only configured
// identities and valid codes appear as label values.
func TestBoundedLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.SetIdentities([]string{"spiffe://cluster.local/ns/a/sa/known"})
	for i, id := range []string{"spiffe://cluster.local/ns/a/sa/known", "spiffe://cluster.local/ns/x/sa/1", "spiffe://cluster.local/ns/x/sa/2", ""} {
		m.Request(Inbound, "a/web", id != "", m.Identity(id), []int{200, 999, 42, 503}[i], 0.001)
	}
	want := `
# HELP weft_responses_total HTTP responses sent, by status code (502/503/504 for proxy errors).
# TYPE weft_responses_total counter
weft_responses_total{direction="inbound",dst_service="a/web",peer_identity="",status_code="503",tls="false"} 1
weft_responses_total{direction="inbound",dst_service="a/web",peer_identity="other",status_code="other",tls="true"} 2
weft_responses_total{direction="inbound",dst_service="a/web",peer_identity="spiffe://cluster.local/ns/a/sa/known",status_code="200",tls="true"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "weft_responses_total"); err != nil {
		t.Error(err)
	}
}
