package sidecar

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestPprofOnlyWhenEnabled: the profiles are served on the admin listener
// only with Config.Pprof.
func TestPprofOnlyWhenEnabled(t *testing.T) {
	get := func(p *Proxy, path string) (int, string) {
		t.Helper()
		res, err := http.Get("http://" + p.Addr("admin") + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	off := startProxy(t, Config{AdminAddr: "127.0.0.1:0"}, nil)
	if code, _ := get(off, "/debug/pprof/heap"); code != http.StatusNotFound {
		t.Errorf("pprof off: /debug/pprof/heap answered %d", code)
	}
	on := startProxy(t, Config{AdminAddr: "127.0.0.1:0", Pprof: true}, nil)
	if code, body := get(on, "/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(body, "goroutine profile") {
		t.Errorf("goroutine profile: %d %.80q", code, body)
	}
	if code, body := get(on, "/debug/pprof/profile?seconds=1"); code != http.StatusOK || len(body) == 0 {
		t.Errorf("CPU profile: %d, %d bytes", code, len(body))
	}
	if code, _ := get(on, "/debug/pprof/nonesuch"); code != http.StatusNotFound {
		t.Errorf("unknown profile answered %d", code)
	}
}
