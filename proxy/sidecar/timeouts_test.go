package sidecar

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/identity"
)

// TestSlowClientsCutOff: on every listener, a client that starts and never
// finishes what the proxy must read before serving (a TLS handshake, a
// request head, an HTTP/2 frame) is disconnected by the header or idle
// timeout instead of holding its connection. TestHeaderTimeout and
// TestInboundSlowHeaders cover plaintext HTTP/1 heads.
func TestSlowClientsCutOff(t *testing.T) {
	const timeout = 200 * time.Millisecond
	app := echoApp(t)
	k := newPKI(t)
	ss, _, _ := k.source(t, serverID)
	cs, _, _ := k.source(t, clientID)
	in := startProxy(t, Config{
		InboundAddr: "127.0.0.1:0", InboundTarget: app, Identity: ss,
		HeaderTimeout: timeout, IdleTimeout: timeout,
	}, snapshot(meshconfig.Endpoint{Address: "127.0.0.1:9"}, "", meshconfig.MTLSStrict))
	// The header timeout also bounds the handshake, which the test's client
	// must finish on a loaded machine before it can leave a head unfinished.
	inTLS := startProxy(t, Config{
		InboundAddr: "127.0.0.1:0", InboundTarget: app, Identity: ss,
		HeaderTimeout: 3 * time.Second, IdleTimeout: timeout,
	}, snapshot(meshconfig.Endpoint{Address: "127.0.0.1:9"}, "", meshconfig.MTLSStrict))
	out := startProxy(t, Config{
		Static: []Static{{Listen: "127.0.0.1:0", Dst: vip}}, AdminAddr: "127.0.0.1:0",
		HeaderTimeout: timeout, IdleTimeout: timeout,
	}, snapshot(meshconfig.Endpoint{Address: app}, "", ""))
	meshTLS := func(alpn string) func(t *testing.T, c net.Conn) net.Conn {
		return func(t *testing.T, c net.Conn) net.Conn {
			tc := tls.Client(c, cs.ClientConfig(spiffeid.RequireFromString(serverID), alpn))
			if err := tc.Handshake(); err != nil {
				t.Fatalf("handshake: %v", err)
			}
			return tc
		}
	}
	plain := func(t *testing.T, c net.Conn) net.Conn { return c }
	for _, tc := range []struct {
		name string
		addr string
		wrap func(t *testing.T, c net.Conn) net.Conn
		send string
	}{
		// The record header of a ClientHello and part of its body.
		{"inbound, TLS handshake", in.Addr("inbound"), plain, "\x16\x03\x01\x01\x00\x01\x00\x00\xfc\x03\x03"},
		{"inbound, HTTP/1 head over mTLS", inTLS.Addr("inbound"), meshTLS(identity.ALPNH1), "GET / HTTP/1.1\r\nHost: a\r\n"},
		// The connection preface and the header of a HEADERS frame whose
		// payload never comes.
		{"inbound, HTTP/2 frame over mTLS", inTLS.Addr("inbound"), meshTLS(identity.ALPNH2),
			"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00" + "\x00\x00\x40\x01\x04\x00\x00\x00\x01"},
		{"outbound, h2c frame", out.Addr("127.0.0.1:0"), plain,
			"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00" + "\x00\x00\x40\x01\x04\x00\x00\x00\x01"},
		{"admin, HTTP/1 head", out.Addr("admin"), plain, "GET /ready HTTP/1.1\r\nHost: a\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := net.Dial("tcp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			// Safety net only: reading ends when the proxy closes.
			raw.SetDeadline(time.Now().Add(30 * time.Second))
			c := tc.wrap(t, raw)
			if _, err := io.WriteString(c, tc.send); err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(io.Discard, c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the proxy kept the unfinished connection open")
			}
		})
	}
}
