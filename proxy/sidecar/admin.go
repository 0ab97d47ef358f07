package sidecar

import (
	"encoding/json"
	"net/http"
	"runtime/pprof"
	"strconv"
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
		mux.HandleFunc("GET /debug/pprof/{name}", serveProfile)
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

// serveProfile writes a runtime profile for `go tool pprof`: "profile" is
// CPU for ?seconds= (default 30), other names are runtime/pprof's (heap,
// allocs, goroutine, ...; ?debug=1 for text). It uses runtime/pprof rather
// than net/http/pprof, whose index page would link html/template into the
// binary (half a megabyte of resident memory).
func serveProfile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if name == "profile" {
		sec, err := strconv.Atoi(r.FormValue("seconds"))
		if err != nil || sec <= 0 {
			sec = 30
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		if err := pprof.StartCPUProfile(w); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		select {
		case <-time.After(time.Duration(sec) * time.Second):
		case <-r.Context().Done():
		}
		pprof.StopCPUProfile()
		return
	}
	prof := pprof.Lookup(name)
	if prof == nil {
		http.Error(w, "unknown profile", http.StatusNotFound)
		return
	}
	debug, _ := strconv.Atoi(r.FormValue("debug"))
	if debug == 0 {
		w.Header().Set("Content-Type", "application/octet-stream")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	prof.WriteTo(w, debug)
}
