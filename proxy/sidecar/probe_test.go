package sidecar

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestParseAppProbes(t *testing.T) {
	valid := `[{"container":"app","kind":"liveness","type":"http","port":8080,"scheme":"HTTP","path":"/healthz",` +
		`"headers":[{"name":"X-Probe","value":"1"}],"timeoutSeconds":2},` +
		`{"container":"app","kind":"readiness","type":"tcp","port":8080,"timeoutSeconds":1},` +
		`{"container":"grpc","kind":"startup","type":"grpc","port":9000,"service":"svc","timeoutSeconds":1}]`
	for _, tc := range []struct {
		name, env, wantErr string
		want               int
	}{
		{name: "unset", env: "", want: 0},
		{name: "empty array", env: "[]", want: 0},
		{name: "valid", env: valid, want: 3},
		{name: "not JSON", env: "{", wantErr: "not a JSON array"},
		{name: "object", env: `{"container":"app"}`, wantErr: "not a JSON array"},
		{name: "unknown field", env: `[{"container":"app","kind":"liveness","type":"tcp","port":1,"url":"http://x"}]`, wantErr: "unknown field"},
		{name: "port", env: `[{"container":"app","kind":"liveness","type":"tcp","port":70000}]`, wantErr: "port 70000 is not a port"},
		{name: "kind", env: `[{"container":"app","kind":"alive","type":"tcp","port":1}]`, wantErr: `kind "alive"`},
		{name: "type", env: `[{"container":"app","kind":"liveness","type":"exec","port":1}]`, wantErr: `type "exec"`},
		{name: "scheme", env: `[{"container":"app","kind":"liveness","type":"http","scheme":"FTP","port":1}]`, wantErr: `scheme "FTP"`},
		{name: "path", env: `[{"container":"app","kind":"liveness","type":"http","scheme":"HTTP","path":"@evil/","port":1}]`, wantErr: "does not start with /"},
		{name: "header injection", env: `[{"container":"app","kind":"liveness","type":"http","scheme":"HTTP","port":1,"headers":[{"name":"X","value":"a\r\nHost: evil"}]}]`, wantErr: "not a valid header"},
		{name: "container with slash", env: `[{"container":"a/b","kind":"liveness","type":"tcp","port":1}]`, wantErr: "has a slash"},
		{name: "duplicate", env: `[{"container":"app","kind":"liveness","type":"tcp","port":1},{"container":"app","kind":"liveness","type":"tcp","port":2}]`, wantErr: "duplicate probe app/liveness"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAppProbes(tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseAppProbes() error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(got) != tc.want {
				t.Fatalf("ParseAppProbes() = %v, %v; want %d probes", got, err, tc.want)
			}
		})
	}
}

// loopbackPort returns the port of a loopback address.
func loopbackPort(t *testing.T, addr string) int32 {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("address %q is not on 127.0.0.1", addr)
	}
	n, _ := strconv.Atoi(port)
	return int32(n)
}

// closedPort is a loopback port with nothing listening.
func closedPort(t *testing.T) int32 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := loopbackPort(t, ln.Addr().String())
	ln.Close()
	return port
}

type probeResult struct {
	status int
	body   string
	header http.Header
}

func probe(t *testing.T, h http.Handler, method, target string) probeResult {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, err := http.NewRequest(method, srv.URL+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", "kube-probe/1.37")
	// The kubelet's client does not follow a redirect to another place
	// either; here any redirect must stay visible to the test.
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return probeResult{resp.StatusCode, string(b), resp.Header}
}

func TestAppProbeHTTP(t *testing.T) {
	type seen struct{ path, host, probeHeader, agent, query string }
	got := make(chan seen, 10)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.URL.Path, r.Host, r.Header.Get("X-Probe"), r.Header.Get("User-Agent"), r.URL.RawQuery}
		switch r.URL.Path {
		case "/healthz":
			w.Write([]byte("healthy"))
		case "/sick":
			http.Error(w, "database down", http.StatusServiceUnavailable)
		case "/moved":
			http.Redirect(w, r, "http://example.com/elsewhere", http.StatusFound)
		case "/big":
			w.Write([]byte(strings.Repeat("x", 3*maxProbeBody)))
		}
	}))
	defer app.Close()
	tlsApp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("tls ok")) }))
	defer tlsApp.Close()

	port := loopbackPort(t, app.Listener.Addr().String())
	h := NewAppProbeHandler([]AppProbe{
		{Container: "app", Kind: "liveness", Type: "http", Scheme: "HTTP", Port: port, Path: "/healthz",
			Headers: []AppProbeHeader{{Name: "X-Probe", Value: "yes"}, {Name: "Host", Value: "web.local"}}},
		{Container: "app", Kind: "readiness", Type: "http", Scheme: "HTTP", Port: port, Path: "/sick"},
		{Container: "app", Kind: "startup", Type: "http", Scheme: "HTTP", Port: port, Path: "/moved"},
		{Container: "big", Kind: "liveness", Type: "http", Scheme: "HTTP", Port: port, Path: "/big"},
		{Container: "tls", Kind: "liveness", Type: "http", Scheme: "HTTPS", Port: loopbackPort(t, tlsApp.Listener.Addr().String()), Path: "/"},
		{Container: "down", Kind: "liveness", Type: "http", Scheme: "HTTP", Port: closedPort(t), Path: "/"},
	}, testLog(t))

	t.Run("healthy app, original path and headers", func(t *testing.T) {
		r := probe(t, h, "GET", "/app-probe/app/liveness?path=/admin")
		if r.status != http.StatusOK || r.body != "healthy" {
			t.Fatalf("probe = %d %q, want 200 healthy", r.status, r.body)
		}
		s := <-got
		// The query of the kubelet's request is not passed on: only the
		// configured probe runs.
		if s != (seen{path: "/healthz", host: "web.local", probeHeader: "yes", agent: "kube-probe/1.37"}) {
			t.Errorf("application saw %+v", s)
		}
	})
	t.Run("failing app keeps its status and message", func(t *testing.T) {
		r := probe(t, h, "GET", "/app-probe/app/readiness")
		if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "database down") {
			t.Fatalf("probe = %d %q", r.status, r.body)
		}
		<-got
	})
	t.Run("redirect is reported, not followed", func(t *testing.T) {
		r := probe(t, h, "GET", "/app-probe/app/startup")
		if r.status != http.StatusFound || r.header.Get("Location") != "" {
			t.Fatalf("probe = %d Location %q; want 302 without Location", r.status, r.header.Get("Location"))
		}
		<-got
	})
	t.Run("body is bounded", func(t *testing.T) {
		r := probe(t, h, "GET", "/app-probe/big/liveness")
		if r.status != http.StatusOK || len(r.body) != maxProbeBody {
			t.Fatalf("probe = %d with %d bytes, want 200 with %d", r.status, len(r.body), maxProbeBody)
		}
		<-got
	})
	t.Run("https without verification, like the kubelet", func(t *testing.T) {
		if r := probe(t, h, "GET", "/app-probe/tls/liveness"); r.status != http.StatusOK || r.body != "tls ok" {
			t.Fatalf("probe = %d %q", r.status, r.body)
		}
	})
	t.Run("app not listening", func(t *testing.T) {
		r := probe(t, h, "GET", "/app-probe/down/liveness")
		if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "liveness probe of container down failed") {
			t.Fatalf("probe = %d %q", r.status, r.body)
		}
	})
	for _, tc := range []struct {
		name, method, target string
		want                 int
	}{
		{"unknown container", "GET", "/app-probe/other/liveness", http.StatusNotFound},
		{"unknown kind", "GET", "/app-probe/app/healthz", http.StatusNotFound},
		{"extra path", "GET", "/app-probe/app/liveness/x", http.StatusNotFound},
		{"dot segments", "GET", "/app-probe/app/../app/liveness", http.StatusNotFound},
		{"outside the prefix", "GET", "/healthz", http.StatusNotFound},
		{"POST", "POST", "/app-probe/app/liveness", http.StatusMethodNotAllowed},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			if r := probe(t, h, tc.method, tc.target); r.status != tc.want {
				t.Errorf("%s %s = %d, want %d", tc.method, tc.target, r.status, tc.want)
			}
		})
	}
	select {
	case s := <-got:
		t.Errorf("a refused request reached the application: %+v", s)
	default:
	}
}

func TestAppProbeHTTPTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer app.Close()
	h := NewAppProbeHandler([]AppProbe{{Container: "app", Kind: "liveness", Type: "http", Scheme: "HTTP",
		Port: loopbackPort(t, app.Listener.Addr().String()), Path: "/", TimeoutSeconds: 1}}, testLog(t))
	r := probe(t, h, "GET", "/app-probe/app/liveness")
	if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "timed out after 1s") {
		t.Fatalf("probe = %d %q, want 503 timed out", r.status, r.body)
	}
}

func TestAppProbeTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	h := NewAppProbeHandler([]AppProbe{
		{Container: "app", Kind: "readiness", Type: "tcp", Port: loopbackPort(t, ln.Addr().String())},
		{Container: "down", Kind: "readiness", Type: "tcp", Port: closedPort(t)},
	}, testLog(t))
	if r := probe(t, h, "GET", "/app-probe/app/readiness"); r.status != http.StatusOK {
		t.Errorf("listening port: probe = %d %q, want 200", r.status, r.body)
	}
	if r := probe(t, h, "GET", "/app-probe/down/readiness"); r.status != http.StatusServiceUnavailable {
		t.Errorf("closed port: probe = %d %q, want 503", r.status, r.body)
	}
}

func TestAppProbeGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("orders", healthpb.HealthCheckResponse_NOT_SERVING)
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	go s.Serve(ln)
	defer s.Stop()
	port := loopbackPort(t, ln.Addr().String())
	h := NewAppProbeHandler([]AppProbe{
		{Container: "app", Kind: "liveness", Type: "grpc", Port: port},
		{Container: "app", Kind: "readiness", Type: "grpc", Port: port, Service: "orders"},
		{Container: "app", Kind: "startup", Type: "grpc", Port: port, Service: "unknown"},
		{Container: "down", Kind: "liveness", Type: "grpc", Port: closedPort(t)},
	}, testLog(t))
	for target, want := range map[string]int{
		"/app-probe/app/liveness":  http.StatusOK,
		"/app-probe/app/readiness": http.StatusServiceUnavailable,
		"/app-probe/app/startup":   http.StatusServiceUnavailable,
		"/app-probe/down/liveness": http.StatusServiceUnavailable,
	} {
		if r := probe(t, h, "GET", target); r.status != want {
			t.Errorf("%s = %d %q, want %d", target, r.status, r.body, want)
		}
	}
}

// TestAppProbeJSONShape pins the field names of the contract with the
// injector, which writes them.
func TestAppProbeJSONShape(t *testing.T) {
	b, err := json.Marshal(AppProbe{Container: "c", Kind: "liveness", Type: "http", Port: 1, Scheme: "HTTP", Path: "/",
		Headers: []AppProbeHeader{{Name: "a", Value: "b"}}, Service: "s", TimeoutSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"container":"c","kind":"liveness","type":"http","port":1,"scheme":"HTTP","path":"/","headers":[{"name":"a","value":"b"}],"service":"s","timeoutSeconds":1}`
	if string(b) != want {
		t.Errorf("JSON = %s\nwant   %s", b, want)
	}
}

// FuzzParseAppProbes: whatever the environment holds, parsing does not
// panic, and every probe it accepts targets a real port with a known type.
func FuzzParseAppProbes(f *testing.F) {
	f.Add(`[{"container":"app","kind":"liveness","type":"http","port":8080,"scheme":"HTTP","path":"/healthz","timeoutSeconds":1}]`)
	f.Add(`[{"container":"app","kind":"readiness","type":"grpc","port":9000,"service":"x"}]`)
	f.Add(`[]`)
	f.Add(`{`)
	f.Fuzz(func(t *testing.T, env string) {
		probes, err := ParseAppProbes(env)
		if err != nil {
			return
		}
		for _, p := range probes {
			if p.Port < 1 || p.Port > 65535 || (p.Type != "http" && p.Type != "tcp" && p.Type != "grpc") {
				t.Fatalf("accepted invalid probe %+v", p)
			}
			if p.Type == "http" && p.Path != "" && !strings.HasPrefix(p.Path, "/") {
				t.Fatalf("accepted a path that could change the host: %q", p.Path)
			}
		}
	})
}
