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
// nothing are closed after the TCP idle timeout, through one proxy and two;
// one that keeps carrying bytes for several timeouts is not.
func TestTCPIdleTimeout(t *testing.T) {
	const idle = time.Second
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
				quiet, qbr := tc.open(t, p.addr)
				defer quiet.Close()
				busy, bbr := tc.open(t, p.addr)
				defer busy.Close()
				for _, c := range []net.Conn{quiet, busy} {
					c.SetDeadline(time.Now().Add(30 * time.Second))
				}
				if err := exchange(quiet, qbr, "\x00\x01hello"); err != nil {
					t.Fatal(err)
				}
				// The busy connection sends every 100 ms for three
				// timeouts, and each message must come back.
				for i := range 30 {
					if err := exchange(busy, bbr, fmt.Sprintf("\x00\x01msg %d", i)); err != nil {
						t.Fatalf("busy connection, message %d: %v", i, err)
					}
					time.Sleep(100 * time.Millisecond)
				}
				// By now the quiet one is closed: reading ends with EOF or
				// a reset, not the test's deadline.
				quiet.SetReadDeadline(time.Now().Add(20 * time.Second))
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
				if err := exchange(busy, bbr, "\x00\x01still there"); err != nil {
					t.Fatalf("busy connection after the quiet one closed: %v", err)
				}
			})
		}
	}
}
