package sidecar

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// FuzzLaneAcceptsOnlyWhatNetHTTPServes: every request head the lane keeps
// (instead of handing it to net/http's server) is one net/http's server
// also serves, and reads the same way: method, target, Host, fields and
// body length. So the lane adds no request that the server in front of it
// before would have refused or read differently.
func FuzzLaneAcceptsOnlyWhatNetHTTPServes(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x?y=1 HTTP/1.1\r\nHost: a:80\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET /x HTTP/1.1\r\nhost: a\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost : a\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost:\ta\t\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 01\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: a\r\nX: \x7f\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: a\r\nX\x00: 1\r\n\r\n",
		"GET  /x HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /x  HTTP/1.1\r\nHost: a\r\n\r\n",
		"get /x HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close, upgrade\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: a\r\nTransfer-encoding: identity\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: a\r\n: empty name\r\n\r\n",
	} {
		f.Add(seed)
	}
	var mu sync.Mutex
	var got *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		got = r
		mu.Unlock()
	}))
	defer srv.Close()

	f.Fuzz(func(t *testing.T, in string) {
		i := strings.Index(in, "\r\n\r\n")
		if i < 0 {
			return
		}
		head := []byte(in[:i+4])
		if !crlfOnly(head) || len(head) > 4096 {
			return // peekHead hands these off before parse
		}
		var l lane
		req, ok := l.parse(head)
		if !ok {
			return // handed to net/http: nothing to compare
		}
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		mu.Lock()
		got = nil
		mu.Unlock()
		var msg bytes.Buffer
		msg.Write(head)
		if req.ContentLength > 0 {
			if req.ContentLength > 1<<20 {
				return
			}
			msg.Write(bytes.Repeat([]byte("x"), int(req.ContentLength)))
		}
		if _, err := c.Write(msg.Bytes()); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("net/http's server did not answer %q: %v", head, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("the lane serves %q, net/http's server answers %d", head, res.StatusCode)
		}
		mu.Lock()
		g := got
		mu.Unlock()
		if g.Method != req.Method || g.RequestURI != req.RequestURI || g.Host != req.Host ||
			g.ContentLength != req.ContentLength || !reflect.DeepEqual(g.Header, req.Header) {
			t.Fatalf("%q read differently:\nlane     %s %s host %q length %d %v\nnet/http %s %s host %q length %d %v",
				head, req.Method, req.RequestURI, req.Host, req.ContentLength, req.Header,
				g.Method, g.RequestURI, g.Host, g.ContentLength, g.Header)
		}
	})
}

// FuzzLaneFastParse: what parseRequestHead takes, http.ReadRequest with
// the lane's checks takes too, and reads the same way.
func FuzzLaneFastParse(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x?y=1&z=%20 HTTP/1.1\r\nHost: a:80\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\nconnection: keep-alive, Close\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nPragma: no-cache\r\n\r\n",
		"GET /a%2Fb/../c HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Tab:\t1\t\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		i := strings.Index(in, "\r\n\r\n")
		if i < 0 {
			return
		}
		head := []byte(in[:i+4])
		if !crlfOnly(head) {
			return
		}
		fast, ok := parseRequestHead(head)
		if !ok {
			return
		}
		var l lane
		std, ok := l.readRequest(head)
		if !ok {
			t.Fatalf("%q: taken by parseRequestHead, not by readRequest", head)
		}
		if fast.Method != std.Method || fast.RequestURI != std.RequestURI || !reflect.DeepEqual(fast.URL, std.URL) ||
			fast.Proto != std.Proto || fast.ProtoMajor != std.ProtoMajor || fast.ProtoMinor != std.ProtoMinor ||
			!reflect.DeepEqual(fast.Header, std.Header) || fast.Host != std.Host || fast.Close != std.Close ||
			fast.ContentLength != std.ContentLength || std.TransferEncoding != nil || std.Trailer != nil ||
			(fast.Body == http.NoBody) != (std.Body == http.NoBody) {
			t.Fatalf("%q read differently:\nfast %+v\nstd  %+v", head, fast, std)
		}
	})
}

// A typical request head costs six allocations in parseRequestHead: the
// head's copy, the URL, the map (two), the values' slice and the request.
func TestLaneParseAllocations(t *testing.T) {
	head := []byte("POST /echo?size=1024 HTTP/1.1\r\nHost: backend.bench.svc.cluster.local\r\nUser-Agent: fortio.org/fortio-1.69.1\r\n" +
		"Content-Length: 1024\r\nContent-Type: application/octet-stream\r\nX-Request-Id: 4bf92f35\r\n\r\n")
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := parseRequestHead(head); !ok {
			t.Fatal("declined")
		}
	}); n > 6 {
		t.Fatalf("%v allocations, want at most 6", n)
	}
	var l lane
	t.Logf("readRequest: %v allocations", testing.AllocsPerRun(100, func() { l.readRequest(head) }))
}
