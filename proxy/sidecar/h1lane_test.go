package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/proxy/internal/rawtcp"
	"github.com/weftmesh/weft/proxy/internal/testnet"
	"github.com/weftmesh/weft/proxy/upstream"
)

// laneConn serves one TCP connection with the lane and handler h; handed
// receives the connection if the lane gives it to net/http's server.
func laneConn(t *testing.T, h http.Handler) (client net.Conn, br *bufio.Reader, handed <-chan net.Conn) {
	t.Helper()
	return laneConnOf(t, laneProxy(), h)
}

func laneProxy() *Proxy {
	return &Proxy{cfg: Config{IdleTimeout: time.Minute, HeaderTimeout: 5 * time.Second},
		log: slog.New(slog.DiscardHandler), conns: tracker{conns: map[*conn]struct{}{}}}
}

func laneConnOf(t *testing.T, p *Proxy, h http.Handler) (client net.Conn, br *bufio.Reader, handed <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	q := newQueue(nil)
	t.Cleanup(func() { q.Close() })
	ch := make(chan net.Conn, 1)
	go func() {
		if c, err := q.Accept(); err == nil {
			ch <- c
		}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := &conn{Conn: raw, info: &connInfo{}, done: p.conns.remove}
	p.conns.add(c)
	go p.serveH1(c, c, q, h)
	client.SetDeadline(time.Now().Add(20 * time.Second))
	return client, bufio.NewReader(client), ch
}

func readResp(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	res, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

func echoHandler(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Path", r.URL.Path)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// Pipelined keep-alive requests, with and without bodies, come back in
// order on one connection.
func TestLaneKeepAlivePipelined(t *testing.T) {
	c, br, handed := laneConn(t, http.HandlerFunc(echoHandler))
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"+
		"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []struct{ path, body string }{{"/a", ""}, {"/b", "hello"}, {"/c", ""}} {
		res, body := readResp(t, br, "GET")
		if res.StatusCode != 200 || res.Header.Get("X-Path") != want.path || body != want.body {
			t.Fatalf("got %d %s %q, want %s %q", res.StatusCode, res.Header.Get("X-Path"), body, want.path, want.body)
		}
		if res.Header.Get("Date") == "" {
			t.Error("no Date field")
		}
	}
	select {
	case <-handed:
		t.Fatal("plain requests were handed to net/http")
	default:
	}
}

// A body the handler does not read is skipped to reach the next request.
func TestLaneUnreadBody(t *testing.T) {
	c, br, _ := laneConn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}))
	io.WriteString(c, "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"+
		"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []string{"/first", "/second"} {
		if res, body := readResp(t, br, "GET"); body != want || res.TransferEncoding == nil && res.ContentLength < 0 {
			t.Fatalf("got %q, want %q", body, want)
		}
	}
}

// Framing: chunked with trailers, HEAD, 204, 304, empty responses, 1xx.
func TestLaneResponseFraming(t *testing.T) {
	c, br, _ := laneConn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		switch r.URL.Path {
		case "/stream":
			h.Set("Trailer", "X-Sum")
			io.WriteString(w, "part one,")
			http.NewResponseController(w).Flush()
			io.WriteString(w, "part two")
			h.Set("X-Sum", "42")
			h.Set(http.TrailerPrefix+"X-Late", "yes")
		case "/head":
			h.Set("Content-Length", "1234")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/notmodified":
			h.Set("Content-Length", "99")
			w.WriteHeader(http.StatusNotModified)
		case "/error":
			w.WriteHeader(http.StatusBadGateway)
		case "/hints":
			h.Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			h.Del("Link")
			io.WriteString(w, "after hints")
		case "/short":
			h.Set("Content-Length", "10")
			io.WriteString(w, "abc")
		}
	}))
	send := func(method, path string) {
		io.WriteString(c, method+" "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
	}

	send("GET", "/stream")
	res, body := readResp(t, br, "GET")
	if body != "part one,part two" || len(res.TransferEncoding) != 1 || res.Trailer.Get("X-Sum") != "42" || res.Trailer.Get("X-Late") != "yes" {
		t.Errorf("stream: %q %v trailers %v", body, res.TransferEncoding, res.Trailer)
	}

	send("HEAD", "/head")
	res, body = readResp(t, br, "HEAD")
	if body != "" || res.ContentLength != 1234 {
		t.Errorf("HEAD: %q length %d", body, res.ContentLength)
	}

	send("GET", "/nocontent")
	if res, body = readResp(t, br, "GET"); res.StatusCode != 204 || body != "" || res.Header.Get("Content-Length") != "" {
		t.Errorf("204: %d %q %v", res.StatusCode, body, res.Header)
	}

	send("GET", "/notmodified")
	if res, body = readResp(t, br, "GET"); res.StatusCode != 304 || body != "" {
		t.Errorf("304: %d %q", res.StatusCode, body)
	}

	send("GET", "/error")
	if res, body = readResp(t, br, "GET"); res.StatusCode != 502 || res.ContentLength != 0 || body != "" {
		t.Errorf("502: %d length %d %q", res.StatusCode, res.ContentLength, body)
	}

	send("GET", "/hints")
	res, body = readResp(t, br, "GET")
	if res.StatusCode != 103 || res.Header.Get("Link") == "" {
		t.Fatalf("early hints: %d %v", res.StatusCode, res.Header)
	}
	if res, body = readResp(t, br, "GET"); res.StatusCode != 200 || body != "after hints" || res.Header.Get("Link") != "" {
		t.Errorf("after 103: %d %q %v", res.StatusCode, body, res.Header)
	}

	// A body shorter than its length closes the connection after it.
	send("GET", "/short")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(res.Body); string(b) != "abc" || err != io.ErrUnexpectedEOF {
		t.Errorf("short body: %q, %v", b, err)
	}
}

// Connection: close is answered with Connection: close, then the close.
func TestLaneConnectionClose(t *testing.T) {
	c, br, _ := laneConn(t, http.HandlerFunc(echoHandler))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	res, _ := readResp(t, br, "GET")
	if !res.Close {
		t.Error("response does not say Connection: close")
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("connection still open: %v", err)
	}
}

// What the lane does not serve goes, unread, to net/http's server, and the
// requests before it were answered by the lane.
func TestLaneHandsOff(t *testing.T) {
	cases := map[string]string{
		"chunked body":   "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"expect":         "POST /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
		"upgrade":        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"http/1.0":       "GET /x HTTP/1.0\r\n\r\n",
		"h2c preface":    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"two hosts":      "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"no host":        "GET /x HTTP/1.1\r\n\r\n",
		"absolute form":  "GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
		"bad host":       "GET /x HTTP/1.1\r\nHost: a b\r\n\r\n",
		"folded field":   "GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  2\r\n\r\n",
		"bad value":      "GET /x HTTP/1.1\r\nHost: a\r\nX-A: \x01\r\n\r\n",
		"garbage":        "\x00\x01\x02 nonsense\r\n\r\n",
		"long head":      "GET /x HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 5000) + "\r\n\r\n",
		"connect":        "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
		"bad length":     "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
		"length twice":   "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"bare lf":        "GET /x HTTP/1.1\nHost: a\n\n",
		"bare lf inside": "GET /x HTTP/1.1\r\nHost: a\nHost: b\r\n\r\n",
		"bare cr":        "GET /x HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
		"trailer fields": "POST /x HTTP/1.1\r\nHost: a\r\nTrailer: X-T\r\nContent-Length: 1\r\n\r\na",
	}
	for name, req := range cases {
		// Behind the first request, or once the lane waits for the next
		// (without its buffers, see waitRequest).
		for _, idle := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/idle=%v", name, idle), func(t *testing.T) {
				testLaneHandsOff(t, req, idle)
			})
		}
	}
}

func testLaneHandsOff(t *testing.T, req string, idle bool) {
	c, br, handed := laneConn(t, http.HandlerFunc(echoHandler))
	first := "GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
	if idle {
		io.WriteString(c, first)
	} else {
		io.WriteString(c, first+req)
	}
	if res, _ := readResp(t, br, "GET"); res.Header.Get("X-Path") != "/first" {
		t.Fatalf("first request: %v", res.Header)
	}
	if idle {
		io.WriteString(c, req)
	}
	var hc net.Conn
	select {
	case hc = <-handed:
	case <-time.After(10 * time.Second):
		t.Fatal("not handed to net/http")
	}
	hc.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(req))
	if _, err := io.ReadFull(hc, got); err != nil || string(got) != req {
		t.Fatalf("net/http would read %q (%v), want %q", got, err, req)
	}
}

// A panic closes the connection without an answer; the listener is not
// affected (each connection has its own lane).
func TestLanePanic(t *testing.T) {
	for _, v := range []any{http.ErrAbortHandler, "boom"} {
		c, br, _ := laneConn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "partial")
			panic(v)
		}))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
			t.Errorf("panic %v: read %q, %v; want a close without a response", v, b, err)
		}
	}
}

// A client that closes its connection while its request is handled
// cancels the request's context.
func TestLaneClientGoneCancels(t *testing.T) {
	canceled := make(chan struct{})
	c, _, _ := laneConn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			close(canceled)
		case <-time.After(20 * time.Second):
		}
	}))
	leaveDuringRequest(c)
	waitClosed(t, canceled, "request context not canceled after the client left")
}

// leaveDuringRequest sends a request on c and closes c once the lane
// watches for the client going away.
func leaveDuringRequest(c net.Conn) {
	io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(2 * laneWatchAfter)
	c.Close()
}

func waitClosed(t *testing.T, ch <-chan struct{}, failure string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(15 * time.Second):
		t.Fatal(failure)
	}
}

// forwardTo is a handler that relays GET requests to url with the pool's
// plaintext client, as the proxy's forwarders do.
func forwardTo(t *testing.T, url string) http.Handler {
	pool := upstream.New(upstream.Options{})
	t.Cleanup(pool.CloseIdle)
	rt := pool.Plain()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out, err := http.NewRequestWithContext(r.Context(), http.MethodGet, url+r.URL.Path, nil)
		if err != nil {
			t.Error(err)
			return
		}
		resp, err := rt.RoundTrip(out)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	})
}

// A client that leaves while the upstream has not answered aborts the
// upstream request (through the lane's abort slot, see upstream.AbortSlot).
func TestLaneClientGoneAbortsUpstream(t *testing.T) {
	upstreamGone := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			close(upstreamGone)
		case <-time.After(20 * time.Second):
		}
	}))
	defer up.Close()
	c, _, _ := laneConn(t, forwardTo(t, up.URL))
	leaveDuringRequest(c)
	waitClosed(t, upstreamGone, "the upstream request was not canceled after the client left")
}

// Requests of one lane relayed in turn reuse one upstream connection: each
// is released from the lane's abort slot at the end of its response.
func TestLaneReusesUpstreamConnection(t *testing.T) {
	var conns atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.URL.Path)
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	defer up.Close()
	c, br, _ := laneConn(t, forwardTo(t, up.URL))
	for i := range 3 {
		path := "/" + strconv.Itoa(i)
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		res, body := readResp(t, br, http.MethodGet)
		if res.StatusCode != http.StatusOK || body != "hello "+path {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("upstream saw %d connections, want 1", n)
	}
}

// A slow handler whose client stays keeps the connection: the watch's read
// leaves the next request for the lane.
func TestLaneSlowHandlerKeepsConnection(t *testing.T) {
	c, br, handed := laneConn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(3 * laneWatchAfter)
		}
		if r.Context().Err() != nil {
			t.Error("context canceled while the client waits")
		}
		io.WriteString(w, r.URL.Path)
	}))
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(2 * laneWatchAfter)
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n") // arrives while the watch reads
	for _, want := range []string{"/slow", "/next"} {
		if _, body := readResp(t, br, "GET"); body != want {
			t.Fatalf("got %q, want %q", body, want)
		}
	}
	io.WriteString(c, "GET /third HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, body := readResp(t, br, "GET"); body != "/third" {
		t.Fatalf("got %q after the watch", body)
	}
	select {
	case <-handed:
		t.Fatal("handed to net/http")
	default:
	}
}

// The drain closes idle lane connections at once and lets a request being
// handled finish, answered with Connection: close.
func TestLaneDrain(t *testing.T) {
	p := laneProxy()
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			<-release
		}
		io.WriteString(w, r.URL.Path)
	})
	idle, idleBR, _ := laneConnOf(t, p, h)
	busy, busyBR, _ := laneConnOf(t, p, h)
	io.WriteString(idle, "GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
	readResp(t, idleBR, "GET")
	io.WriteString(busy, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(50 * time.Millisecond) // the idle lane waits, the busy one handles

	drained := p.conns.startDrain()
	p.draining.Store(true)
	p.conns.wakeIdleLanes()
	if _, err := idleBR.ReadByte(); err != io.EOF {
		t.Errorf("idle connection: %v, want EOF", err)
	}
	close(release)
	res, body := readResp(t, busyBR, "GET")
	if body != "/hold" || !res.Close {
		t.Errorf("busy connection: %q, close %v", body, res.Close)
	}
	if _, err := busyBR.ReadByte(); err != io.EOF {
		t.Errorf("busy connection after its response: %v, want EOF", err)
	}
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatalf("%d connections left after the drain", p.conns.count())
	}
}

// A response to a request whose large body the handler left unread reaches
// the client whole: the lane closes its side and waits for the client's,
// instead of resetting the connection on the unread bytes.
func TestLaneUnreadLargeBodyResponseArrives(t *testing.T) {
	c, br, _ := laneConn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		io.WriteString(w, "too large")
	}))
	const size = 4 << 20
	go func() {
		io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(size)+"\r\n\r\n")
		c.Write(make([]byte, size)) // fails once the lane has closed
	}()
	res, body := readResp(t, br, "POST")
	if res.StatusCode != http.StatusRequestEntityTooLarge || body != "too large" {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the response: %v, want EOF", err)
	}
}

// A handler that reads its body only after the watch's first look: the
// watch waits for the body and the request completes (and the race
// detector sees the timer handled under its lock).
func TestLaneLateBodyRead(t *testing.T) {
	c, br, _ := laneConn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(3 * laneWatchAfter)
		echoHandler(w, r)
	}))
	io.WriteString(c, "POST /late HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	if _, body := readResp(t, br, "POST"); body != "hello" {
		t.Fatalf("got %q", body)
	}
}

// A client that sends its request and shuts its sending side still gets
// the answer, then the close.
func TestLaneHalfClosedClientGetsResponse(t *testing.T) {
	c, br, _ := laneConn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(3 * laneWatchAfter) // the watch sees the EOF meanwhile
		io.WriteString(w, "ok")
	}))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.(*net.TCPConn).CloseWrite()
	if _, body := readResp(t, br, "GET"); body != "ok" {
		t.Fatalf("got %q", body)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the response: %v, want EOF", err)
	}
}

// A body too large to skip is answered with Connection: close.
func TestLaneLargeUnreadBodySaysClose(t *testing.T) {
	c, br, _ := laneConn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	const size = 1 << 20
	go func() {
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(size)+"\r\n\r\n")
		c.Write(make([]byte, size))
	}()
	res, body := readResp(t, br, "POST")
	if body != "ok" || !res.Close {
		t.Fatalf("got %q, close %v; want Connection: close", body, res.Close)
	}
}

// An extra CRLF after a POST body (old clients) is skipped, as net/http
// skips it, and the connection stays in the lane.
func TestLaneCRLFAfterPost(t *testing.T) {
	c, br, handed := laneConn(t, http.HandlerFunc(echoHandler))
	io.WriteString(c, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\r\n"+
		"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []string{"/a", "/b"} {
		if res, _ := readResp(t, br, "GET"); res.Header.Get("X-Path") != want {
			t.Fatalf("got %q, want %q", res.Header.Get("X-Path"), want)
		}
	}
	select {
	case <-handed:
		t.Fatal("handed to net/http")
	default:
	}
}

// The extra CRLF also when it comes after the lane went idle, alone or with
// the next request.
func TestLaneCRLFAfterPostIdle(t *testing.T) {
	for _, split := range []bool{false, true} {
		c, br, handed := laneConn(t, http.HandlerFunc(echoHandler))
		io.WriteString(c, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
		if res, _ := readResp(t, br, "GET"); res.Header.Get("X-Path") != "/a" {
			t.Fatalf("got %q, want /a", res.Header.Get("X-Path"))
		}
		next := "GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
		if split {
			io.WriteString(c, "\r\n")
			time.Sleep(20 * time.Millisecond) // the lane waits again, past the CRLF
			io.WriteString(c, next)
		} else {
			io.WriteString(c, "\r\n"+next)
		}
		if res, _ := readResp(t, br, "GET"); res.Header.Get("X-Path") != "/b" {
			t.Fatalf("split %v: got %q, want /b", split, res.Header.Get("X-Path"))
		}
		select {
		case <-handed:
			t.Fatalf("split %v: handed to net/http", split)
		default:
		}
	}
}

// A 1xx response carries no framing fields.
func TestLaneInformationalHasNoFraming(t *testing.T) {
	c, br, _ := laneConn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2")
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "ok")
	}))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil || line != "HTTP/1.1 103 Early Hints" {
		t.Fatalf("status line %q, %v", line, err)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		t.Fatal(err)
	}
	if h.Get("Link") == "" || h.Get("Content-Length") != "" {
		t.Errorf("103 fields: %v", h)
	}
	if _, body := readResp(t, br, "GET"); body != "ok" {
		t.Errorf("final response body %q", body)
	}
}

// The drain also closes an idle lane that is waiting past the extra CRLF
// an old client sent after a POST body.
func TestLaneDrainAfterPostCRLF(t *testing.T) {
	p := laneProxy()
	c, br, _ := laneConnOf(t, p, http.HandlerFunc(echoHandler))
	io.WriteString(c, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\r\n")
	readResp(t, br, "POST")
	time.Sleep(50 * time.Millisecond) // the lane waits past the CRLF
	p.conns.startDrain()
	p.draining.Store(true)
	p.conns.wakeIdleLanes()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the drain: %v, want EOF", err)
	}
}

// Between requests on a plain socket the lane gives its read and write
// buffers back; the request that ends the wait arrives whole, and bytes
// beyond the lent chunk come from the socket.
func TestLaneWaitsWithoutBuffers(t *testing.T) {
	client, sock := testnet.TCPPair(t)
	c := &conn{Conn: sock, info: &connInfo{}}
	c.br = bufio.NewReaderSize(c.Conn, laneBufSize)
	l := &lane{p: laneProxy(), c: c, br: c.br}
	l.pr, _ = rawtcp.NewPooledReader(c.Conn, &laneChunks)
	l.lent.c = c.Conn
	l.bw = laneWriters.Get().(*bufio.Writer)
	l.bw.Reset(c.Conn)
	l.w.bw = l.bw

	body := strings.Repeat("b", 3*laneBufSize)
	req := "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
	go io.WriteString(client, req+body+"GET /y HTTP/1.1\r\nHost: x\r\n\r\n")
	if err := l.waitRequest(); err != nil {
		t.Fatal(err)
	}
	if l.bw != nil || l.w.bw != nil {
		t.Fatal("the writer was kept through the wait")
	}
	if l.br == nil || c.br != l.br {
		t.Fatal("no reader after the wait, or the connection's is another")
	}
	head, ok := l.peekHead()
	if !ok || string(head) != req {
		t.Fatalf("head %q, %v; want %q", head, ok, req)
	}
	l.br.Discard(len(head))
	got := make([]byte, len(body))
	if _, err := io.ReadFull(l.br, got); err != nil || string(got) != body {
		t.Fatalf("body: %v, %d bytes", err, len(got))
	}
	// The next request is buffered or on its way: either way it is read
	// whole, with the buffers of the wait.
	if err := l.waitRequest(); err != nil {
		t.Fatal(err)
	}
	if head, ok := l.peekHead(); !ok || string(head) != "GET /y HTTP/1.1\r\nHost: x\r\n\r\n" {
		t.Fatalf("second head %q, %v", head, ok)
	}
	client.Close()
	l.br.Discard(l.br.Buffered())
	if err := l.waitRequest(); err != io.EOF {
		t.Fatalf("after the client closed: %v, want EOF", err)
	}
}
