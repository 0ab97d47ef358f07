package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

// TestInboundMetricCardinality: random Host values and paths, allowed,
// denied and refused, never add metric series once each kind was seen.
func TestInboundMetricCardinality(t *testing.T) {
	reg := prometheus.NewRegistry()
	app := serve(t, &recorder{})
	p := startProxy(t, Config{InboundAddr: "127.0.0.1:0", InboundTarget: app, Registry: reg},
		inboundSnap(appPort(t, app), "", meshconfig.DefaultAllow, denyPaths("/admin")))
	series := func() int {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, mf := range mfs {
			n += len(mf.GetMetric())
		}
		return n
	}
	send := func(i int) {
		host := fmt.Sprintf("h%x.example", rand.Uint64())
		path := fmt.Sprintf("/p%x", rand.Uint64())
		switch i % 3 {
		case 1:
			path = "/admin" + path
		case 2:
			path += "%zz"
		}
		r := rawHTTP(t, p.Addr("inbound"), "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		if want := []int{200, 403, 400}[i%3]; r.status != want {
			t.Fatalf("%s: %d, want %d", path, r.status, want)
		}
	}
	for i := range 30 {
		send(i)
	}
	before := series()
	for i := range 600 {
		send(i)
	}
	if after := series(); after != before {
		t.Errorf("metric series grew from %d to %d with random hosts and paths", before, after)
	}
}

// TestInboundSlowHeaders: a client trickling its request head is cut off by
// the header timeout even though the strict head reader is buffering it.
func TestInboundSlowHeaders(t *testing.T) {
	app := serve(t, &recorder{})
	p := startProxy(t, Config{InboundAddr: "127.0.0.1:0", InboundTarget: app, HeaderTimeout: 300 * time.Millisecond},
		inboundSnap(appPort(t, app), "", meshconfig.DefaultAllow))
	c, err := net.Dial("tcp", p.Addr("inbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Safety net only: the loop below ends when the proxy closes.
	c.SetDeadline(time.Now().Add(60 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: backend\r\n")
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c)
		close(closed)
	}()
	for i := 0; ; i++ {
		select {
		case <-closed:
			return
		case <-time.After(20 * time.Millisecond):
		}
		if _, err := io.WriteString(c, "x"); err != nil {
			return
		}
		if i > 2000 {
			t.Fatal("a client trickling headers was never cut off")
		}
	}
}

// TestInboundDeniedResponse: a denied request gets a short 403 body and the
// decision is counted with bounded labels.
func TestInboundDeniedResponse(t *testing.T) {
	app := serve(t, &recorder{})
	p := plainInbound(t, app, inboundSnap(appPort(t, app), "", meshconfig.DefaultDeny))
	res, err := h1Client().Get("http://" + p.Addr("inbound") + "/anything")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden || len(b) > 64 || !strings.Contains(string(b), "denied") {
		t.Errorf("got %d %q", res.StatusCode, b)
	}
}

// TestInboundNeverServesAdmin: the admin paths on the inbound listener
// reach the application (or a policy), never the proxy's admin handlers.
func TestInboundNeverServesAdmin(t *testing.T) {
	app := serve(t, &recorder{})
	p := startProxy(t, Config{InboundAddr: "127.0.0.1:0", InboundTarget: app, AdminAddr: "127.0.0.1:0"},
		inboundSnap(appPort(t, app), "", meshconfig.DefaultAllow))
	for _, path := range []string{"/config", "/metrics", "/identity", "/ready", "/live"} {
		res, err := h1Client().Get("http://" + p.Addr("inbound") + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != "app" {
			t.Errorf("inbound %s answered %q, not the application", path, b)
		}
	}
}

// TestInboundTunnelRevoked: an upgraded connection (WebSocket) has no next
// request; a snapshot that no longer allows it closes it.
func TestInboundTunnelRevoked(t *testing.T) {
	app := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw)
	}))
	snap := inboundSnap(appPort(t, app), "", meshconfig.DefaultAllow)
	p := plainInbound(t, app, snap)
	c, err := net.Dial("tcp", p.Addr("inbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second)) // safety net only
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: backend\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", res, err)
	}
	io.WriteString(c, "ping")
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
		t.Fatalf("echo %q %v", got, err)
	}
	next := *snap
	next.Version = "authz-2"
	next.Inbound.Policies = []meshconfig.AuthorizationPolicy{denyPaths("/ws")}
	if err := p.Apply(&next); err != nil {
		t.Fatal(err)
	}
	// The echo app says nothing unprompted: EOF means the proxy closed the
	// tunnel, a timeout that it left it open.
	if n, err := br.Read(make([]byte, 16)); n != 0 || err == nil || isTimeout(err) {
		t.Errorf("revoked tunnel: read %d bytes, %v", n, err)
	}
}
