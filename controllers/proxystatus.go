package controllers

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// proxyStatusTTL: a replica's report older than this is from a replica that
// is gone or stuck, and no longer counts.
const proxyStatusTTL = 2 * time.Minute

// replicaReport is one control-plane replica's entry in
// weft-proxy-status-<rev> (key "<pod>.json"); the control plane writes it.
type replicaReport struct {
	Connected *int32           `json:"connected"`
	Stale     int32            `json:"stale"`
	ByVersion map[string]int32 `json:"byVersion"`
	Updated   time.Time        `json:"updated"`
}

// proxyReport is the sum of the fresh replica reports.
type proxyReport struct {
	Connected  int32
	Stale      int32
	ByVersion  map[string]int32
	ByRevision map[string]int32
}

func (p *proxyReport) add(revision string, o proxyReport) {
	if p.ByVersion == nil {
		p.ByVersion = map[string]int32{}
	}
	if p.ByRevision == nil {
		p.ByRevision = map[string]int32{}
	}
	p.Connected += o.Connected
	p.Stale += o.Stale
	for v, n := range o.ByVersion {
		p.ByVersion[v] += n
	}
	p.ByRevision[revision] += o.Connected
}

// sumProxyStatus adds up the entries of a proxy-status ConfigMap that were
// updated within proxyStatusTTL of now. Malformed entries are skipped and
// returned as errors so the caller can log them; they never fail the sum.
func sumProxyStatus(data map[string]string, now time.Time) (proxyReport, []error) {
	out := proxyReport{ByVersion: map[string]int32{}}
	var errs []error
	for key, raw := range data {
		if !strings.HasSuffix(key, ".json") {
			continue
		}
		var r replicaReport
		if err := json.Unmarshal([]byte(raw), &r); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
			continue
		}
		if r.Connected == nil || *r.Connected < 0 || r.Stale < 0 || r.Updated.IsZero() {
			errs = append(errs, fmt.Errorf("%s: needs connected ≥ 0, stale ≥ 0 and updated", key))
			continue
		}
		if now.Sub(r.Updated) > proxyStatusTTL {
			continue
		}
		out.Connected += *r.Connected
		out.Stale += r.Stale
		for v, n := range r.ByVersion {
			if n > 0 {
				out.ByVersion[v] += n
			}
		}
	}
	return out, errs
}
