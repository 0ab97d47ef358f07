package sidecar

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// hopLog is a server proxy's access log as a test sees it: the protocol and
// status of each request that arrived from the client proxy, i.e. what the
// hop between the proxies spoke.
type hopLog struct {
	mu   sync.Mutex
	hops []hop
}

type hop struct {
	proto  string
	path   string
	status int64
}

func (l *hopLog) logger() *slog.Logger { return slog.New(l) }

func (l *hopLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *hopLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *hopLog) WithGroup(string) slog.Handler            { return l }

func (l *hopLog) Handle(_ context.Context, r slog.Record) error {
	var h hop
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "proto":
			h.proto = a.Value.String()
		case "path":
			h.path = a.Value.String()
		case "status":
			h.status = a.Value.Int64()
		}
		return true
	})
	l.mu.Lock()
	l.hops = append(l.hops, h)
	l.mu.Unlock()
	return nil
}

// wait returns the hop of the request to path. The access log line is
// written after the response, so it may come a little after the client has
// read it.
func (l *hopLog) wait(t *testing.T, path string) hop {
	t.Helper()
	var got hop
	waitFor(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, h := range l.hops {
			if h.path == path {
				got = h
				return true
			}
		}
		return false
	})
	return got
}

// inboundConns is how many connections the server proxy accepted.
func inboundConns(t *testing.T, p *Proxy) float64 {
	mfs, err := p.cfg.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "weft_tcp_open_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "direction" && l.GetValue() == "inbound" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// TestMeshProtocolChoice: with the default (auto) mesh protocol a request
// crosses the mesh in the protocol its client spoke; h2 and h1 force one.
// Whatever the hop, the application sees its client's protocol, the
// client's identity and the response's trailers, and an HTTP/1.1 client's
// requests reuse one pooled mTLS connection.
func TestMeshProtocolChoice(t *testing.T) {
	app := echoApp(t)
	for _, tc := range []struct {
		mesh           string
		fromH1, fromH2 string // the hop's protocol for each client
	}{
		{"", "HTTP/1.1", "HTTP/2.0"},
		{"auto", "HTTP/1.1", "HTTP/2.0"},
		{"h2", "HTTP/2.0", "HTTP/2.0"},
		{"h1", "HTTP/1.1", "HTTP/1.1"},
	} {
		var log hopLog
		p := twoHop(t, app, pathOpts{mesh: tc.mesh, serverAccess: log.logger()})
		for _, cl := range []struct {
			name, proto, hop string
			c                *http.Client
		}{{"HTTP/1.1", "HTTP/1.1", tc.fromH1, h1Client()}, {"h2c", "HTTP/2.0", tc.fromH2, h2cClient()}} {
			t.Run(fmt.Sprintf("mesh %q/%s", tc.mesh, cl.name), func(t *testing.T) {
				conns := inboundConns(t, p.server)
				for i := range 3 {
					path := fmt.Sprintf("/mesh-%s/%s/%d", tc.mesh, cl.name, i)
					body := strings.Repeat("b", 100+i*1000)
					res, err := cl.c.Post("http://"+p.addr+path, "text/plain", strings.NewReader(body))
					if err != nil {
						t.Fatal(err)
					}
					got, _ := io.ReadAll(res.Body)
					res.Body.Close()
					if want := fmt.Sprintf("POST %s %d:%s", path, len(body), body); res.StatusCode != http.StatusCreated || string(got) != want {
						t.Fatalf("got %d %.60q, want 201 %.60q", res.StatusCode, got, want)
					}
					if h := res.Header.Get("X-Proto"); h != cl.proto {
						t.Errorf("app saw %s, client spoke %s", h, cl.proto)
					}
					if h := res.Header.Get("X-Client-Id"); h != clientID {
						t.Errorf("app saw client identity %q, want %q", h, clientID)
					}
					// Known loss: h2c client, h1 mesh (see TestMeshProtocolH1).
					if !(tc.mesh == "h1" && cl.name == "h2c") && res.Trailer.Get("X-Sum") == "" {
						t.Errorf("trailer X-Sum lost; trailers %v", res.Trailer)
					}
					if h := log.wait(t, path); h.proto != cl.hop || h.status != http.StatusCreated {
						t.Errorf("hop between the proxies: %s %d, want %s 201", h.proto, h.status, cl.hop)
					}
				}
				if cl.hop == "HTTP/1.1" && cl.proto == "HTTP/1.1" {
					if n := inboundConns(t, p.server) - conns; n != 1 {
						t.Errorf("3 sequential requests opened %v mTLS connections, want 1 (pooled)", n)
					}
				}
			})
		}
	}
}

// TestMeshAutoGRPCStatusAndTrailers: with the auto mesh protocol a gRPC
// call crosses the mesh over HTTP/2, and a short unary response carrying a
// non-OK status and custom trailers reaches the client whole.
func TestMeshAutoGRPCStatusAndTrailers(t *testing.T) {
	var log hopLog
	p := twoHop(t, startGRPC(t), pathOpts{serverAccess: log.logger()})
	cc, err := grpc.NewClient("passthrough:///"+p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := testgrpc.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for range 20 {
		var trailer metadata.MD
		_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.FailedPrecondition), Message: "not yet"}},
			grpc.Trailer(&trailer))
		if s := status.Convert(err); s.Code() != codes.FailedPrecondition || s.Message() != "not yet" {
			t.Fatalf("status: %v", err)
		}
		if got := trailer.Get("x-trailer"); len(got) != 1 || got[0] != "t1" {
			t.Fatalf("trailer x-trailer = %v (trailers %v)", got, trailer)
		}
	}
	if h := log.wait(t, "/grpc.testing.TestService/UnaryCall"); h.proto != "HTTP/2.0" {
		t.Errorf("gRPC crossed the mesh over %s, want HTTP/2.0", h.proto)
	}
}

// TestMeshAutoChunkedTrailers: an HTTP/1.1 client's chunked body with
// trailers crosses the auto mesh over HTTP/1.1; the application gets body
// and trailer, and the client gets the response's trailers.
func TestMeshAutoChunkedTrailers(t *testing.T) {
	app := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Got-Trailer, X-Got-Len")
		w.Header().Set("X-TE", strings.Join(r.TransferEncoding, ","))
		w.WriteHeader(http.StatusOK)
		fmt.Fprintf(w, "%d %v", len(body), err)
		w.Header().Set("X-Got-Trailer", r.Trailer.Get("X-Checksum"))
		w.Header().Set("X-Got-Len", fmt.Sprint(len(body)))
	}))
	var log hopLog
	p := twoHop(t, app, pathOpts{serverAccess: log.logger()})
	for i, size := range []int{10, 100 << 10} {
		pr, pw := io.Pipe()
		req, _ := http.NewRequest("PUT", fmt.Sprintf("http://%s/chunked/%d", p.addr, i), pr)
		req.Trailer = http.Header{"X-Checksum": nil}
		go func() {
			// Written in pieces, the trailer set only once the body is done,
			// as a streaming client does.
			for off := 0; off < size; off += 4096 {
				io.WriteString(pw, strings.Repeat("c", min(4096, size-off)))
			}
			req.Trailer.Set("X-Checksum", fmt.Sprintf("len-%d", size))
			pw.Close()
		}()
		res, err := h1Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if want := fmt.Sprintf("%d <nil>", size); res.StatusCode != 200 || string(got) != want {
			t.Fatalf("got %d %q, want 200 %q", res.StatusCode, got, want)
		}
		if res.Header.Get("X-TE") != "chunked" {
			t.Errorf("app got Transfer-Encoding %q, want chunked", res.Header.Get("X-TE"))
		}
		if g := res.Trailer.Get("X-Got-Trailer"); g != fmt.Sprintf("len-%d", size) {
			t.Errorf("app got request trailer %q", g)
		}
		if g := res.Trailer.Get("X-Got-Len"); g != fmt.Sprint(size) {
			t.Errorf("response trailer X-Got-Len = %q (trailers %v)", g, res.Trailer)
		}
		if h := log.wait(t, fmt.Sprintf("/chunked/%d", i)); h.proto != "HTTP/1.1" {
			t.Errorf("hop between the proxies: %s, want HTTP/1.1", h.proto)
		}
	}
}

// TestMeshWebSocket: a WebSocket upgrade through two proxies works with
// every mesh protocol; the hop is HTTP/1.1 (HTTP/2 cannot carry an Upgrade).
func TestMeshWebSocket(t *testing.T) {
	app := wsEchoApp(t)
	for _, mesh := range []string{"auto", "h2", "h1"} {
		t.Run(mesh, func(t *testing.T) {
			var log hopLog
			p := twoHop(t, app, pathOpts{mesh: mesh, serverAccess: log.logger()})
			// Closed at its end: the tunnel ends, and with it the server
			// proxy's request, which is then logged.
			wsEcho(t, p.addr, "hello", strings.Repeat("w", 70000))
			if h := log.wait(t, "/ws"); h.proto != "HTTP/1.1" || h.status != http.StatusSwitchingProtocols {
				t.Errorf("hop between the proxies: %s %d, want HTTP/1.1 101", h.proto, h.status)
			}
		})
	}
}

// TestMeshProtocolUnknown: a misspelt mesh protocol is an error, not a
// silent fallback.
func TestMeshProtocolUnknown(t *testing.T) {
	if _, err := New(Config{Mesh: "h3", Log: testLog(t)}); err == nil {
		t.Fatal("mesh protocol h3 accepted")
	}
}

// TestOrigProtoNotForged: an HTTP/1.1 client cannot make the server proxy
// call the application over h2c by sending the mesh's own header.
func TestOrigProtoNotForged(t *testing.T) {
	for _, mesh := range []string{"auto", "h2", "h1"} {
		t.Run(mesh, func(t *testing.T) {
			p := twoHop(t, echoApp(t), pathOpts{mesh: mesh})
			req, _ := http.NewRequest("GET", "http://"+p.addr+"/", nil)
			req.Header.Set("Weft-Orig-Proto", "HTTP/2")
			res, err := h1Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusCreated || res.Header.Get("X-Proto") != "HTTP/1.1" {
				t.Errorf("status %d, app saw %s; want 201 HTTP/1.1", res.StatusCode, res.Header.Get("X-Proto"))
			}
		})
	}
}
