package upstream

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sameResponse compares what parseResponseHead made of a head with what
// http.ReadResponse made of it.
func sameResponse(got, want *http.Response) error {
	switch {
	case got.Status != want.Status || got.StatusCode != want.StatusCode:
		return fmt.Errorf("status %q %d, want %q %d", got.Status, got.StatusCode, want.Status, want.StatusCode)
	case got.Proto != want.Proto || got.ProtoMajor != want.ProtoMajor || got.ProtoMinor != want.ProtoMinor:
		return fmt.Errorf("proto %q, want %q", got.Proto, want.Proto)
	case !reflect.DeepEqual(got.Header, want.Header):
		return fmt.Errorf("header %q, want %q", got.Header, want.Header)
	case got.ContentLength != want.ContentLength || got.Close != want.Close:
		return fmt.Errorf("length %d close %v, want %d %v", got.ContentLength, got.Close, want.ContentLength, want.Close)
	case len(want.TransferEncoding) > 0 || want.Trailer != nil || want.Uncompressed:
		return fmt.Errorf("ReadResponse found framing the fast path missed: %v %v", want.TransferEncoding, want.Trailer)
	case (got.Body == http.NoBody) != (want.Body == http.NoBody):
		return fmt.Errorf("body %T, want %T", got.Body, want.Body)
	}
	return nil
}

// checkResponseHead parses raw (a head and maybe a body) both ways. It
// fails when the fast path takes what ReadResponse refuses or reads
// differently, and returns whether the fast path took it.
func checkResponseHead(t *testing.T, raw, method string) bool {
	t.Helper()
	end := strings.Index(raw, "\r\n\r\n")
	if end < 0 {
		return false
	}
	got, ok := parseResponseHead([]byte(raw[:end+4]), method)
	if !ok {
		return false
	}
	req, _ := http.NewRequest(method, "http://a/", nil)
	want, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), req)
	if err != nil {
		t.Fatalf("%q: taken by the fast path, refused by ReadResponse: %v", raw, err)
	}
	if err := sameResponse(got, want); err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	return true
}

func TestResponseHeadMatchesReadResponse(t *testing.T) {
	for _, raw := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Sun, 06 Dec 2026 15:00:00 GMT\r\nContent-Length: 1024\r\n\r\n",
		"HTTP/1.1 201\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 404 Not  Found \r\ncontent-length:   7  \r\nx-request-id: 42\r\nX-REQUEST-ID: 43\r\n\r\nmissing",
		"HTTP/1.1 500 Internal Server Error\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nno",
		"HTTP/1.1 200 OK\r\nConnection: closed\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nConnection: x close\r\nContent-Length: 0\r\n\r\n", // not the token "close" for ReadResponse
		"HTTP/1.1 302 Found\r\nLocation: /x\r\nX-Empty:\r\nX-Tab:\tv\t\r\nX-Obs-Text: caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 999 Whatever\r\nContent-Length: 000\r\n\r\n",
	} {
		if !checkResponseHead(t, raw, http.MethodGet) {
			t.Errorf("%q: left to ReadResponse", raw)
		}
	}
}

// What the fast path leaves to ReadResponse: other framings, statuses
// without a body, and anything ReadResponse would refuse or rewrite.
func TestResponseHeadDeclines(t *testing.T) {
	for _, raw := range []string{
		"HTTP/1.1 200 OK\r\n\r\n",                                                    // read to the end
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",                      // chunked
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", // both
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456789\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTrailer: X\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nPragma: no-cache\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: a\r\n b\r\n\r\n", // obs-fold
		"HTTP/1.1 200 OK\r\n X: a\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\nY: b\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\rY: b\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1  200 OK\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 2000 OK\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 20x OK\r\nContent-Length: 3\r\n\r\n",
		"http/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 200 \n\r\nContent-Length:0\r\n\r\n", // ReadResponse ends the status line and the head at the LF
	} {
		if checkResponseHead(t, raw, http.MethodGet) {
			t.Errorf("%q: taken by the fast path", raw)
		}
	}
	if checkResponseHead(t, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", http.MethodHead) {
		t.Error("a response to HEAD was taken by the fast path")
	}
}

// Whatever the head, the fast path takes only what ReadResponse reads the
// same way.
func FuzzResponseHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 404 x\r\ncontent-length: 0\r\nconnection: Close\r\nA-b-C: d\r\na-B-c: e\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		f.Add(s, "GET")
	}
	f.Fuzz(func(t *testing.T, raw, method string) {
		if method != http.MethodHead {
			method = http.MethodGet
		}
		checkResponseHead(t, raw, method)
	})
}

// A typical response head costs five allocations: the head's copy, the
// map (two: small maps made with a size hint get their table at once), the
// values' slice and the Response.
func TestResponseHeadAllocations(t *testing.T) {
	head := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nDate: Sun, 06 Dec 2026 15:00:00 GMT\r\nContent-Length: 1024\r\n\r\n")
	n := testing.AllocsPerRun(100, func() {
		if _, ok := parseResponseHead(head, http.MethodPost); !ok {
			t.Fatal("declined")
		}
	})
	if n > 5 {
		t.Fatalf("%v allocations, want at most 5", n)
	}
}

// Bodies of known length read by h1Body: one that ends early fails the
// read; the connection is reused after a whole body, and not after one
// closed before its end.
func TestH1ContentLengthBodies(t *testing.T) {
	addr, accepted := rawServer(t, func(nc net.Conn, _ int32) {
		eachRequest(nc, func(req *http.Request) bool {
			if req.URL.Path == "/short" {
				io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
				return false
			}
			io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwhole")
			return true
		})
	})
	c, _ := newTestH1(t)
	get := func(path string, read int64) (string, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		resp, err := c.RoundTrip(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, read))
		return string(b), err
	}
	if b, err := get("/short", 100); !errors.Is(err, io.ErrUnexpectedEOF) || b != "hello" {
		t.Fatalf("truncated body: %q, %v", b, err)
	}
	for range 2 {
		if b, err := get("/", 100); err != nil || b != "whole" {
			t.Fatalf("whole body: %q, %v", b, err)
		}
	}
	if n := accepted.Load(); n != 2 {
		t.Fatalf("%d connections after two whole bodies, want 2 (one reused)", n)
	}
	if b, err := get("/", 2); err != nil || b != "wh" {
		t.Fatalf("partial read: %q, %v", b, err)
	}
	if b, err := get("/", 100); err != nil || b != "whole" {
		t.Fatalf("after a body closed early: %q, %v", b, err)
	}
	if n := accepted.Load(); n != 3 {
		t.Fatalf("%d connections, want 3: a connection whose body was closed early must not be reused", n)
	}
}

// A head that arrives in two parts is not whole in the buffer when the
// fast path looks: ReadResponse reads it.
func TestH1SplitResponseHead(t *testing.T) {
	addr, _ := rawServer(t, func(nc net.Conn, _ int32) {
		br := bufio.NewReader(nc)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(nc, "HTTP/1.1 200 OK\r\nX-Part: 1\r\nContent-Le")
		time.Sleep(50 * time.Millisecond)
		io.WriteString(nc, "ngth: 5\r\n\r\nwhole")
		io.Copy(io.Discard, br)
	})
	c, _ := newTestH1(t)
	resp, body := do(t, c, http.MethodGet, "http://"+addr, "")
	if resp.StatusCode != 200 || body != "whole" || resp.Header.Get("X-Part") != "1" || resp.ContentLength != 5 {
		t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

// A server that resets the connection instead of answering: the client
// reports the reset, not the EOF that a second read would find.
func TestH1ReportsReset(t *testing.T) {
	addr, _ := rawServer(t, func(nc net.Conn, _ int32) {
		if _, err := http.ReadRequest(bufio.NewReader(nc)); err == nil {
			nc.(*net.TCPConn).SetLinger(0)
		}
	})
	c, _ := newTestH1(t)
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr, nil)
	resp, err := c.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("got %v, want the connection reset", err)
	}
}

func BenchmarkResponseHead(b *testing.B) {
	raw := "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nDate: Sun, 06 Dec 2026 15:00:00 GMT\r\nContent-Length: 1024\r\n\r\n"
	req, _ := http.NewRequest(http.MethodPost, "http://a/", nil)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			parseResponseHead([]byte(raw), http.MethodPost)
		}
	})
	b.Run("ReadResponse", func(b *testing.B) {
		b.ReportAllocs()
		r := strings.NewReader(raw)
		br := bufio.NewReader(r)
		for b.Loop() {
			r.Reset(raw)
			br.Reset(r)
			http.ReadResponse(br, req)
		}
	})
}
