package sidecar

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func (p *Proxy) adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.cfg.Registry, promhttp.HandlerOpts{}))
	if len(p.cfg.AppProbes) > 0 {
		mux.Handle(AppProbePathPrefix, NewAppProbeHandler(p.cfg.AppProbes, p.log))
	}
	if p.cfg.Pprof {
		// Off by default: profiles show request data and cost CPU.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("live\n")) })
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !p.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(p.table.Load().json)
	})
	mux.HandleFunc("GET /identity", func(w http.ResponseWriter, _ *http.Request) {
		type id struct {
			ID       string    `json:"id,omitempty"`
			NotAfter time.Time `json:"notAfter,omitzero"`
			Serial   string    `json:"serial,omitempty"`
			Roots    []string  `json:"roots,omitempty"`
			Loaded   time.Time `json:"loaded,omitzero"`
			MTLS     bool      `json:"mtls"`
		}
		var out id
		if p.cfg.Identity != nil {
			if m := p.cfg.Identity.Current(); m != nil {
				out = id{ID: m.ID.String(), NotAfter: m.Cert.Leaf.NotAfter, Serial: m.Cert.Leaf.SerialNumber.String(), Loaded: m.Loaded, MTLS: true}
				for _, r := range m.Bundle.X509Authorities() {
					out.Roots = append(out.Roots, r.Subject.String())
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	})
	return mux
}
