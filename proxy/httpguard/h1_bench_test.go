package httpguard

import (
	"io"
	"net"
	"strings"
	"testing"
)

// meshRequest is what a client proxy sends the server proxy for fortio's
// echo load: a POST with a 1 KiB body and the headers the mesh adds.
var meshRequest = "POST /echo HTTP/1.1\r\nHost: backend.bench.svc.cluster.local\r\n" +
	"User-Agent: fortio.org/fortio-1.69.1\r\nContent-Length: 1024\r\nContent-Type: application/octet-stream\r\n" +
	"Weft-Client-Id: spiffe://cluster.local/ns/bench/sa/client\r\nX-Request-Id: 4bf92f3577b34da6a3ce929d0e0e4736\r\n" +
	"Accept-Encoding: gzip\r\n\r\n" + strings.Repeat("x", 1024)

// socket hands out one request per Read, as a socket does when each
// request arrives in its own segment after the previous response.
type socket struct {
	net.Conn
	msg  string
	left int    // requests still to give
	part string // the rest of the current one
}

func (s *socket) Read(p []byte) (int, error) {
	if s.part == "" {
		if s.left == 0 {
			return 0, io.EOF
		}
		s.left--
		s.part = s.msg
	}
	n := copy(p, s.part)
	s.part = s.part[n:]
	return n, nil
}

// readRequests reads n requests through g into buf, as net/http's
// bufio.Reader of 4 KiB would.
func readRequests(tb testing.TB, g *H1Conn, buf []byte, n int) {
	want := n * len(meshRequest)
	for got := 0; got < want; {
		m, err := g.Read(buf)
		if err != nil {
			tb.Fatalf("after %d of %d bytes: %v", got, want, err)
		}
		got += m
	}
}

// The guard allocates nothing per request once a connection is running:
// it is on the path of every inbound HTTP/1 request.
func TestH1ConnSteadyStateAllocs(t *testing.T) {
	s := &socket{msg: meshRequest, left: 1 << 30}
	g := NewH1Conn(s, nil)
	buf := make([]byte, 4096)
	readRequests(t, g, buf, 3)
	if n := testing.AllocsPerRun(200, func() { readRequests(t, g, buf, 1) }); n != 0 {
		t.Fatalf("%v allocations per request, want 0", n)
	}
}

func BenchmarkH1Conn(b *testing.B) {
	s := &socket{msg: meshRequest, left: b.N}
	g := NewH1Conn(s, nil)
	buf := make([]byte, 4096)
	b.SetBytes(int64(len(meshRequest)))
	b.ReportAllocs()
	b.ResetTimer()
	readRequests(b, g, buf, b.N)
}
