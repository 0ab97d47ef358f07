package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/internal/testnet"
)

// grpcApp implements the interop TestService: UnaryCall echoes the payload
// (or fails with the requested status), FullDuplexCall echoes each message.
type grpcApp struct {
	testgrpc.UnimplementedTestServiceServer
}

func (grpcApp) UnaryCall(ctx context.Context, r *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "t1"))
	if s := r.GetResponseStatus(); s != nil && s.Code != 0 {
		return nil, status.Error(codes.Code(s.Code), s.Message)
	}
	return &testgrpc.SimpleResponse{Payload: r.GetPayload()}, nil
}

func (grpcApp) FullDuplexCall(s testgrpc.TestService_FullDuplexCallServer) error {
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: m.GetPayload()}); err != nil {
			return err
		}
	}
}

func startGRPC(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, grpcApp{})
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

func TestGRPC(t *testing.T) {
	app := startGRPC(t)
	for name, p := range hops(t, app, pathOpts{}) {
		t.Run(name, func(t *testing.T) {
			cc, err := grpc.NewClient("passthrough:///"+p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			c := testgrpc.NewTestServiceClient(cc)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()

			var trailer metadata.MD
			res, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("ping")}}, grpc.Trailer(&trailer))
			if err != nil || string(res.GetPayload().GetBody()) != "ping" {
				t.Fatalf("unary: %v %v", res, err)
			}
			if got := trailer.Get("x-trailer"); len(got) != 1 || got[0] != "t1" {
				t.Errorf("trailer x-trailer = %v", got)
			}
			// A gRPC error travels in trailers of a 200 response.
			_, err = c.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.PermissionDenied), Message: "nope"}})
			if s := status.Convert(err); s.Code() != codes.PermissionDenied || s.Message() != "nope" {
				t.Errorf("error status: %v", err)
			}

			// Bidirectional stream: each reply must arrive before the next
			// message is sent, so nothing may be buffered.
			st, err := c.FullDuplexCall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				body := bytes.Repeat([]byte{byte('a' + i)}, 1+i*20000)
				if err := st.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: body}}); err != nil {
					t.Fatal(err)
				}
				m, err := st.Recv()
				if err != nil || !bytes.Equal(m.GetPayload().GetBody(), body) {
					t.Fatalf("message %d: %v", i, err)
				}
			}
			st.CloseSend()
			if _, err := st.Recv(); !errors.Is(err, io.EOF) {
				t.Errorf("stream end: %v", err)
			}
		})
	}
}

// tcpEcho upper-cases what it reads until EOF, then closes: it only answers
// after the client half-closes, so it fails unless half-close passes through.
func tcpEcho(t *testing.T, banner string) string {
	return testnet.Serve(t, func(c net.Conn) {
		defer c.Close()
		if banner != "" {
			io.WriteString(c, banner)
		}
		in, _ := io.ReadAll(c)
		c.Write(bytes.ToUpper(in))
	})
}

func TestOpaqueTCP(t *testing.T) {
	for _, tc := range []struct {
		name   string
		banner string // server speaks first
		send   string
		opts   pathOpts
	}{
		{"detected as opaque from first bytes", "", "\x00\x01binary protocol", pathOpts{}},
		{"looks like HTTP but port is opaque", "", "GET / HTTP/1.1\r\n\r\n", pathOpts{opaque: []uint16{vip.Port()}}},
		{"server-first on an opaque port", "220 mail ready\r\n", "QUIT\r\n", pathOpts{opaque: []uint16{vip.Port()}}},
		// Not listed as opaque: the silent client is given up on after the
		// detection timeout, then bytes flow.
		{"server-first after detection timeout", "* OK imap\r\n", "a1 logout\r\n", pathOpts{detect: 100 * time.Millisecond}},
	} {
		app := tcpEcho(t, tc.banner)
		for name, p := range hops(t, app, tc.opts) {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				c, err := net.Dial("tcp", p.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				if tc.banner != "" {
					got := make([]byte, len(tc.banner))
					if _, err := io.ReadFull(c, got); err != nil || string(got) != tc.banner {
						t.Fatalf("banner %q %v", got, err)
					}
				}
				big := tc.send + strings.Repeat("y", 300_000)
				go func() {
					io.WriteString(c, big)
					c.(*net.TCPConn).CloseWrite()
				}()
				got, err := io.ReadAll(c)
				if err != nil || string(got) != strings.ToUpper(big) {
					t.Fatalf("got %d bytes (%.30q), err %v; want %d", len(got), got, err, len(big))
				}
			})
		}
	}
}

// TestGRPCTrailersOnly: a gRPC error is a trailers-only response (one
// HEADERS frame that ends the stream). The proxy must relay it as such: if
// it sent the headers on their own and ended the stream with an empty DATA
// frame, the status would sit in headers, not trailers, and the client would
// report "server closed the stream without sending trailers". Whether the
// headers went out early was a race, so many concurrent calls are made.
func TestGRPCTrailersOnly(t *testing.T) {
	app := startGRPC(t)
	paths := map[string]*path{}
	for name, p := range hops(t, app, pathOpts{}) {
		paths["default forwarder/"+name] = p
	}
	for name, p := range hops(t, app, pathOpts{fwd: RouteForwarders()}) {
		paths["route forwarder/"+name] = p
	}
	for name, p := range paths {
		t.Run(name, func(t *testing.T) {
			cc, err := grpc.NewClient("passthrough:///"+p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			c := testgrpc.NewTestServiceClient(cc)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			const calls = 1000
			errs := make(chan error, calls)
			for range calls {
				go func() {
					_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "gone"}})
					errs <- err
				}()
			}
			bad := 0
			for range calls {
				err := <-errs
				if s := status.Convert(err); s.Code() != codes.NotFound || s.Message() != "gone" {
					if bad == 0 {
						t.Errorf("error status: %v", err)
					}
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d calls lost their status", bad, calls)
			}
		})
	}
}

// TestOpaqueServerHalfClose: the application ends its side first (a
// half-close) and keeps reading; the client sees the end of stream, goes on
// sending, and every byte it sends after the end still reaches the
// application. The opposite of tcpEcho's order.
func TestOpaqueServerHalfClose(t *testing.T) {
	got := make(chan string, 4)
	app := testnet.Serve(t, func(c net.Conn) {
		defer c.Close()
		in := bufio.NewReader(c)
		first, err := in.ReadString('\n')
		if err != nil {
			got <- "first line: " + err.Error()
			return
		}
		io.WriteString(c, "bye\n")
		c.(*net.TCPConn).CloseWrite()
		rest, err := io.ReadAll(in)
		if err != nil {
			got <- "after half-close: " + err.Error()
			return
		}
		got <- first + string(rest)
	})
	for name, p := range hops(t, app, pathOpts{}) {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.WriteString(c, "\x00\x01start\n"); err != nil {
				t.Fatal(err)
			}
			from, err := io.ReadAll(c)
			if err != nil || string(from) != "bye\n" {
				t.Fatalf("from the app: %q %v", from, err)
			}
			more := strings.Repeat("after the end ", 20_000)
			if _, err := io.WriteString(c, more); err != nil {
				t.Fatalf("sending after the app's half-close: %v", err)
			}
			c.(*net.TCPConn).CloseWrite()
			select {
			case s := <-got:
				if want := "\x00\x01start\n" + more; s != want {
					t.Fatalf("app received %d bytes (%.40q), want %d", len(s), s, len(want))
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the app received nothing")
			}
			// The byte counters, counted when the connection ends.
			wantTo := map[string]float64{"to_server": float64(len("\x00\x01start\n") + len(more)), "to_client": 4}
			deadline := time.Now().Add(10 * time.Second)
			for {
				gotTo := tcpBytesByFlow(t, p.client)
				if gotTo["to_server"] == wantTo["to_server"] && gotTo["to_client"] == wantTo["to_client"] {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("weft_tcp_bytes_total by flow: %v, want %v", gotTo, wantTo)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// tcpBytesByFlow sums p's weft_tcp_bytes_total by its flow label.
func tcpBytesByFlow(t *testing.T, p *Proxy) map[string]float64 {
	t.Helper()
	mfs, err := p.cfg.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "weft_tcp_bytes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "flow" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// TestPermissiveServerFirst: in permissive mode the inbound listener cannot
// tell a plaintext client that waits for the server's greeting from a
// meshed client about to send its ClientHello without waiting: it gives the
// silent client the detection timeout, then connects it in plaintext, even
// on an opaque port (as Istio's and Linkerd's proxies do; strict mTLS, or
// the port in skipInboundPorts, avoids the wait). A meshed client on the
// same port is not affected.
func TestPermissiveServerFirst(t *testing.T) {
	app := tcpEcho(t, "220 mail ready\r\n")
	port := appPort(t, app)
	k := newPKI(t)
	ss, _, _ := k.source(t, serverID)
	srv := startProxy(t, Config{
		InboundAddr: "127.0.0.1:0", InboundTarget: app, Identity: ss, DetectTimeout: 100 * time.Millisecond,
	}, inboundSnap(port, meshconfig.ProtocolOpaque, meshconfig.DefaultAllow))
	cs, _, _ := k.source(t, clientID)
	cl := startProxy(t, Config{Static: []Static{{Listen: "127.0.0.1:0", Dst: vip}}, Identity: cs, OpaquePorts: []uint16{vip.Port()}},
		snapshot(meshconfig.Endpoint{Address: srv.Addr("inbound"), Identity: serverID}, meshconfig.ProtocolOpaque, ""))
	for name, addr := range map[string]string{"plaintext client": srv.Addr("inbound"), "meshed client": cl.Addr("127.0.0.1:0")} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			banner := make([]byte, len("220 mail ready\r\n"))
			if _, err := io.ReadFull(c, banner); err != nil || string(banner) != "220 mail ready\r\n" {
				t.Fatalf("banner %q %v", banner, err)
			}
			io.WriteString(c, "quit\r\n")
			c.(*net.TCPConn).CloseWrite()
			if got, err := io.ReadAll(c); err != nil || string(got) != "QUIT\r\n" {
				t.Fatalf("reply %q %v", got, err)
			}
		})
	}
}
