package sidecar

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

// TestDrain: on shutdown an in-flight request completes, new connections
// are refused.
func TestDrain(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	app := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	}))
	p := oneHop(t, app, pathOpts{})
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		res, err := h1Client().Get("http://" + p.addr + "/slow")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		done <- result{string(b), err}
	}()
	<-started
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		shut <- p.client.Shutdown(ctx)
	}()
	// The listener closes before the in-flight request ends.
	for {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	if r := <-done; r.err != nil || r.body != "finished" {
		t.Fatalf("in-flight request: %q %v", r.body, r.err)
	}
	if err := <-shut; err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// TestDrainDeadline: a stream that does not end is cut at the deadline.
func TestDrainDeadline(t *testing.T) {
	p := oneHop(t, tcpEcho(t, ""), pathOpts{opaque: []uint16{vip.Port()}})
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "x") // an open stream that never ends on its own
	waitFor(t, func() bool { return p.client.conns.count() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.client.Shutdown(ctx); err == nil {
		t.Fatal("shutdown reported a clean drain with a stream still open")
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("stream not closed: %v", err)
	}
}

// TestConnectionCap: beyond MaxConns a connection is closed at once; the
// cap frees up when connections close.
func TestConnectionCap(t *testing.T) {
	app := tcpEcho(t, "")
	p := startProxy(t, Config{Static: []Static{{Listen: "127.0.0.1:0", Dst: vip}}, MaxConns: 2, OpaquePorts: []uint16{vip.Port()}},
		snapshot(meshconfig.Endpoint{Address: app}, "", ""))
	addr := p.Addr("127.0.0.1:0")
	var open []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	waitFor(t, func() bool { return p.conns.count() == 2 })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("third connection: n=%d err=%v, want closed", n, err)
	}
	c.Close()
	for _, c := range open {
		c.Close()
	}
	waitFor(t, func() bool { return p.conns.count() == 0 })
	c, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "ok")
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(c); err != nil || string(b) != "OK" {
		t.Fatalf("after freeing: %q %v", b, err)
	}
}

// TestHeaderTimeout: a client that never finishes its headers is
// disconnected (a slowloris does not hold a connection forever).
func TestHeaderTimeout(t *testing.T) {
	p := startProxy(t, Config{Static: []Static{{Listen: "127.0.0.1:0", Dst: vip}}, HeaderTimeout: 100 * time.Millisecond},
		snapshot(meshconfig.Endpoint{Address: echoApp(t)}, "", ""))
	c, err := net.Dial("tcp", p.Addr("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n") // no final CRLF
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("proxy kept the half-sent request open")
	}
}

// TestSnapshotReload: a new file is applied, a bad one is rejected and the
// previous snapshot keeps serving.
func TestSnapshotReload(t *testing.T) {
	appA := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "A") }))
	appB := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "B") }))
	dir := t.TempDir()
	file := filepath.Join(dir, "snapshot.json")
	write := func(b []byte) {
		if err := os.WriteFile(file+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Rename(file+".tmp", file)
	}
	enc := func(s *meshconfig.Snapshot) []byte { b, _ := meshconfig.Encode(s); return b }
	write(enc(snapshot(meshconfig.Endpoint{Address: appA}, "", "")))
	snap, err := LoadSnapshot(file)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	p := startProxy(t, Config{Static: []Static{{Listen: "127.0.0.1:0", Dst: vip}}, Registry: reg}, snap)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.WatchSnapshot(ctx, file, 10*time.Millisecond)
	get := func() string {
		res, err := h1Client().Get("http://" + p.Addr("127.0.0.1:0") + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return string(b)
	}
	if got := get(); got != "A" {
		t.Fatalf("before reload: %q", got)
	}
	next := snapshot(meshconfig.Endpoint{Address: appB}, "", "")
	next.Version = "test-2"
	write(enc(next))
	waitFor(t, func() bool { return p.Snapshot().Version == "test-2" })
	if got := get(); got != "B" {
		t.Fatalf("after reload: %q", got)
	}
	write([]byte(`{"version":"test-3","outbound":{},"inbound":{},"futureField":1}`))
	waitFor(t, func() bool { return testutil.ToFloat64(p.metrics.ReloadCounter("snapshot", "error")) == 1 })
	if p.Snapshot().Version != "test-2" || get() != "B" {
		t.Fatalf("bad snapshot applied: now %s", p.Snapshot().Version)
	}
}

// TestGoldenMetrics: requests are counted with bounded labels: the
// destination from the snapshot, status, TLS and the peer identity.
func TestGoldenMetrics(t *testing.T) {
	p := twoHop(t, echoApp(t), pathOpts{})
	for _, path := range []string{"/a", "/b", "/" + strings.Repeat("z", 300)} {
		res, err := h1Client().Get("http://" + p.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	text := func(pr *Proxy) string {
		res, err := http.Get("http://" + startAdmin(t, pr) + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return string(b)
	}
	// A response is recorded when its handler returns, which can be just
	// after the client has read it: poll instead of scraping once.
	expect := func(pr *Proxy, wants ...string) {
		t.Helper()
		var out string
		deadline := time.Now().Add(10 * time.Second)
		for {
			out = text(pr)
			missing := ""
			for _, w := range wants {
				if !strings.Contains(out, w) {
					missing = w
				}
			}
			if missing == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("metrics lack %s\n%s", missing, grep(out, "weft_"))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	expect(p.client,
		`weft_responses_total{direction="outbound",dst_service="shop/backend",peer_identity="`+serverID+`",status_code="201",tls="true"} 3`,
		`weft_response_latency_seconds_count{direction="outbound",dst_service="shop/backend"} 3`)
	// The server does not know the client identity from its snapshot: it is
	// reported as "other", never as a free-form value.
	expect(p.server, `weft_responses_total{direction="inbound",dst_service="unknown",peer_identity="other",status_code="201",tls="true"} 3`)
}

// TestMetricsAbortedResponse: a response that breaks after its headers went
// out (here the client hangs up mid-body) ends the forwarder with
// panic(http.ErrAbortHandler); it must still be counted, with the status
// that was sent, by both proxies.
func TestMetricsAbortedResponse(t *testing.T) {
	app := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "first part")
		http.NewResponseController(w).Flush()
		<-r.Context().Done() // the rest never comes: the proxy hangs up first
	}))
	p := twoHop(t, app, pathOpts{})
	res, err := h1Client().Get("http://" + p.addr + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("status %d", res.StatusCode)
	}
	buf := make([]byte, len("first part"))
	if _, err := io.ReadFull(res.Body, buf); err != nil {
		t.Fatal(err)
	}
	res.Body.Close() // unread body: the transport closes the connection
	counted := func(pr *Proxy, want string) func() bool {
		return func() bool {
			return testutil.GatherAndCompare(pr.cfg.Registry, strings.NewReader(want), "weft_responses_total") == nil
		}
	}
	const help = "# HELP weft_responses_total HTTP responses sent, by status code (502/503/504 for proxy errors).\n# TYPE weft_responses_total counter\n"
	waitFor(t, counted(p.client, help+`weft_responses_total{direction="outbound",dst_service="shop/backend",peer_identity="`+serverID+`",status_code="201",tls="true"} 1`+"\n"))
	waitFor(t, counted(p.server, help+`weft_responses_total{direction="inbound",dst_service="unknown",peer_identity="other",status_code="201",tls="true"} 1`+"\n"))
}

func startAdmin(t *testing.T, p *Proxy) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: p.adminMux()}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

func grep(s, sub string) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) && !strings.HasPrefix(sc.Text(), "#") {
			out = append(out, sc.Text())
		}
	}
	return strings.Join(out, "\n")
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
