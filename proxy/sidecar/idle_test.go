package sidecar

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftmesh/weft/proxy/internal/testnet"
	"github.com/weftmesh/weft/proxy/metrics"
)

// TestTCPIdleTimeout: an opaque connection and an upgraded tunnel that carry
// nothing are closed after the TCP idle timeout, through one proxy and two,
// and the proxy goes on serving new ones. Which connections the sweep
// picks is TestQuietTunnels'; what the kernel reports, rawtcp's TestQuiet.
func TestTCPIdleTimeout(t *testing.T) {
	const idle = 500 * time.Millisecond
	echo := testnet.Serve(t, func(c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
	})
	ws := wsEchoApp(t)
	type opener func(t *testing.T, addr string) (net.Conn, *bufio.Reader)
	opaque := func(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return c, bufio.NewReader(c)
	}
	upgraded := func(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: backend\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		br := bufio.NewReader(c)
		res, err := http.ReadResponse(br, nil)
		if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %v %v", res, err)
		}
		return c, br
	}
	exchange := func(c net.Conn, br *bufio.Reader, msg string) error {
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil {
			return err
		}
		if string(got) != msg {
			return fmt.Errorf("echo %q, want %q", got, msg)
		}
		return nil
	}
	for _, tc := range []struct {
		name string
		app  string
		open opener
	}{
		{"opaque TCP", echo, opaque},
		{"WebSocket tunnel", ws, upgraded},
	} {
		for name, p := range hops(t, tc.app, pathOpts{tcpIdle: idle}) {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				t.Parallel()
				quiet, qbr := tc.open(t, p.addr)
				defer quiet.Close()
				quiet.SetDeadline(time.Now().Add(30 * time.Second))
				if err := exchange(quiet, qbr, "\x00\x01hello"); err != nil {
					t.Fatal(err)
				}
				// Reading ends with EOF or a reset once the proxy closes
				// the connection; the deadline is a safety net only.
				if _, err := qbr.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("quiet connection still open: %v", err)
				}
				closed := testutil.ToFloat64(p.client.Metrics().IdleClosedCounter(metrics.Outbound))
				if p.server != nil {
					closed += testutil.ToFloat64(p.server.Metrics().IdleClosedCounter(metrics.Inbound))
				}
				if closed < 1 {
					t.Errorf("no idle close counted")
				}
				again, abr := tc.open(t, p.addr)
				defer again.Close()
				again.SetDeadline(time.Now().Add(30 * time.Second))
				if err := exchange(again, abr, "\x00\x01new"); err != nil {
					t.Fatalf("a new connection after the idle close: %v", err)
				}
			})
		}
	}
}

// TestQuietTunnels: the sweep picks the tunnels quiet for at least the
// timeout, and never an HTTP connection (not a tunnel) however quiet, nor a
// connection whose quiet time is unknown.
func TestQuietTunnels(t *testing.T) {
	tr := tracker{conns: map[*conn]struct{}{}}
	quietFor := map[net.Conn]time.Duration{}
	add := func(tunnel bool, q time.Duration, known bool) *conn {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		c := &conn{Conn: a, info: &connInfo{}, done: func(*conn) {}}
		c.info.tunnel.Store(tunnel)
		if known {
			quietFor[a] = q
		}
		tr.add(c)
		return c
	}
	quiet := func(c net.Conn) (time.Duration, bool) {
		q, ok := quietFor[c]
		return q, ok
	}
	long := add(true, 2*time.Second, true)
	exact := add(true, time.Second, true)
	add(true, 999*time.Millisecond, true) // busy enough
	add(false, time.Hour, true)           // HTTP, left to its server
	add(true, 0, false)                   // TCP_INFO refused
	got := tr.quietTunnels(time.Second, quiet)
	if len(got) != 2 || !(got[0] == long && got[1] == exact || got[0] == exact && got[1] == long) {
		t.Fatalf("picked %d connections, want the two quiet tunnels", len(got))
	}
}
