package upstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"syscall"
	"time"

	"github.com/weftmesh/weft/proxy/internal/rawtcp"
)

// h1Client is the plaintext HTTP/1.1 client of the hot path: the calling
// goroutine writes the request and reads the response itself on a pooled
// keep-alive connection. http.Transport runs a reader and a writer goroutine
// per connection and hands every request and response between them and the
// caller over channels; on a small, busy machine those wake-ups were most of
// the proxy's added latency (see bench/proxy/RESULTS.md).
//
// It serves the common exchange only: no body, or a body of known length up
// to maxInlineBody, which is read before anything is sent so that the
// request can be replayed on a fresh connection when a pooled one turns out
// to be dead. Everything else (streamed or chunked request bodies, Expect:
// 100-continue, protocol upgrades, request trailers) goes to fallback,
// which streams both directions at once.
type h1Client struct {
	scheme   string // of the requests it serves: "http", or "https" when dial does TLS
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	fallback http.RoundTripper
	idleTime time.Duration
	maxIdle  int // per address

	mu    sync.Mutex
	idle  map[string][]*h1Conn // most recently used last
	sweep *time.Timer
}

const (
	// maxInlineBody bounds the request bodies h1Client buffers.
	maxInlineBody = 64 << 10
	// maxResponseHeader bounds a response head, like http.Transport's
	// default MaxResponseHeaderBytes.
	maxResponseHeader = 10 << 20
	// max1xx bounds the informational responses before the final one.
	max1xx = 5
)

var errTooMany1xx = errors.New("upstream: too many 1xx informational responses")

type h1Conn struct {
	nc     net.Conn
	lr     limitReader
	br     *bufio.Reader
	bw     *bufio.Writer
	addr   string
	reused bool
	idleAt time.Time

	// The liveness check's state (alive).
	raw     syscall.RawConn
	peekFn  func(fd uintptr) bool
	peekBuf [1]byte
	live    bool

	head []byte // the last request head written, reused
}

// limitReader counts what a response read and caps its head.
type limitReader struct {
	r     io.Reader
	left  int64
	total int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, fmt.Errorf("upstream: response head longer than %d bytes", maxResponseHeader)
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	l.total += int64(n)
	return n, err
}

// h1Buffers recycles the request bodies h1Client reads before sending.
var h1Buffers = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func newH1Client(dial func(ctx context.Context, network, addr string) (net.Conn, error), fallback http.RoundTripper, idle time.Duration) *h1Client {
	return &h1Client{scheme: "http", dial: dial, fallback: fallback, idleTime: idle, maxIdle: 256, idle: map[string][]*h1Conn{}}
}

// inline says whether r is an exchange h1Client does itself.
func (c *h1Client) inline(r *http.Request) bool {
	if r.URL.Scheme != c.scheme || r.ProtoMajor == 2 || len(r.Trailer) > 0 || len(r.TransferEncoding) > 0 {
		return false
	}
	if _, ok := r.Header["Expect"]; ok {
		return false
	}
	if _, ok := r.Header["Upgrade"]; ok || isUpgrade(r) {
		return false
	}
	if r.Body == nil || r.Body == http.NoBody {
		return true
	}
	return r.ContentLength > 0 && r.ContentLength <= maxInlineBody
}

func idempotentMethod(r *http.Request) bool {
	switch r.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, k1 := r.Header["Idempotency-Key"]
	_, k2 := r.Header["X-Idempotency-Key"]
	return k1 || k2
}

func (c *h1Client) RoundTrip(req *http.Request) (*http.Response, error) {
	if !c.inline(req) {
		return c.fallback.RoundTrip(req)
	}
	ctx := req.Context()
	out := *req
	var bp *[]byte
	if req.Body != nil && req.Body != http.NoBody {
		bp = h1Buffers.Get().(*[]byte)
		n := int(req.ContentLength)
		if cap(*bp) < n {
			*bp = make([]byte, n)
		}
		body := (*bp)[:n]
		_, err := io.ReadFull(req.Body, body)
		req.Body.Close()
		if err != nil {
			h1Buffers.Put(bp)
			return nil, fmt.Errorf("upstream: reading the request body (ContentLength %d): %w", n, err)
		}
	}
	defer func() {
		if bp != nil {
			h1Buffers.Put(bp)
		}
	}()
	addr := req.URL.Host
	if req.URL.Port() == "" {
		port := "80"
		if c.scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(req.URL.Hostname(), port)
	}
	for try := 0; ; try++ {
		pc, err := c.get(ctx, addr)
		if err != nil {
			return nil, err
		}
		var body []byte
		if bp != nil {
			body = (*bp)[:req.ContentLength]
		}
		resp, err := c.exchange(ctx, pc, &out, req, body)
		if err == nil {
			return resp, nil
		}
		pc.nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// A pooled connection the server closed just before we used it:
		// nothing came back, so a replayable request goes again on a new
		// connection (http.Transport's rule).
		if try == 0 && pc.reused && pc.lr.total == 0 && idempotentMethod(req) {
			continue
		}
		return nil, err
	}
}

// exchange writes out, with body (its whole body, already read), on pc and
// reads the response head. The response body is read by the caller through
// h1Body, which returns pc to the pool at its end.
func (c *h1Client) exchange(ctx context.Context, pc *h1Conn, out, orig *http.Request, body []byte) (*http.Response, error) {
	var stop func() bool
	var ab *AbortSlot
	if done := ctx.Done(); done != nil {
		if s := abortSlotFrom(ctx); s != nil && s.hold(done, pc) {
			ab = s
		} else {
			stop = context.AfterFunc(ctx, func() { pc.nc.SetDeadline(aLongTimeAgo) })
		}
	}
	fail := func(err error) (*http.Response, error) {
		if stop != nil {
			stop()
		}
		if ab != nil {
			ab.release(pc)
		}
		return nil, err
	}
	pc.lr.left, pc.lr.total = maxResponseHeader, 0
	if err := pc.send(out, body); err != nil {
		return fail(err)
	}
	if _, err := pc.br.Peek(1); err != nil {
		// Here, not in ReadResponse after it: bufio forgets the error, and
		// a second read of a reset connection finds EOF, not the reset.
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // as ReadResponse reports it
		}
		return fail(err)
	}
	resp, own := readFinalHead(pc.br, orig)
	for n1xx := 0; !own; n1xx++ {
		var err error
		if resp, err = http.ReadResponse(pc.br, orig); err != nil {
			return fail(err)
		}
		code := resp.StatusCode
		if code < 100 || code > 199 || code == http.StatusSwitchingProtocols {
			break
		}
		if n1xx == max1xx {
			return fail(errTooMany1xx)
		}
		if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return fail(err)
			}
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return fail(errors.New("upstream: 101 Switching Protocols to a request that did not ask for it"))
	}
	pc.lr.left = math.MaxInt64
	b := &h1Body{c: c, pc: pc, stop: stop, ab: ab, rc: resp.Body, keep: !resp.Close && !out.Close}
	if b.rc == nil {
		// The fast path's Content-Length bytes, read by h1Body itself.
		b.left = resp.ContentLength
	}
	if resp.Body == http.NoBody {
		b.finish(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

var aLongTimeAgo = time.Unix(1, 0)

// h1Body is a response body on a pooled connection: at its end the
// connection goes back to the pool, when closed early it is closed.
type h1Body struct {
	c    *h1Client
	pc   *h1Conn
	stop func() bool   // ends the context's watch, or
	ab   *AbortSlot    // holds pc for the request
	rc   io.ReadCloser // net/http's body reader, or nil:
	left int64         // what is left of a body of known length
	keep bool
	mu   sync.Mutex
	done bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return 0, errors.New("http: read on closed response body")
	}
	if b.rc == nil {
		return b.readLength(p)
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

// readLength reads a body of Content-Length bytes straight from the
// connection's buffer. One that ends early is an error, never an EOF: a
// truncated response must not pass for a whole one.
func (b *h1Body) readLength(p []byte) (int, error) {
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.pc.br.Read(p)
	b.left -= int64(n)
	if b.left == 0 {
		b.finish(true)
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *h1Body) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.finish(false)
	}
	return nil
}

func (b *h1Body) finish(ok bool) {
	b.done = true
	if b.stop != nil && !b.stop() {
		ok = false // the context ended: the deadline may be set
	}
	if b.ab != nil && !b.ab.release(b.pc) {
		ok = false // the request was aborted: the deadline is set
	}
	if ok && b.keep {
		b.c.put(b.pc)
		return
	}
	b.pc.nc.Close()
}

// send writes the request: head and body in one system call (one TLS
// record) when they fit in maxCoalesce, else as one writev.
func (pc *h1Conn) send(out *http.Request, body []byte) error {
	head, ok := appendRequestHead(pc.head[:0], out)
	if !ok {
		if body != nil {
			// A bytes.Reader lets Request.Write send head and body in one
			// write instead of flushing the head first.
			out.Body = io.NopCloser(bytes.NewReader(body))
		}
		if err := out.Write(pc.bw); err != nil {
			return err
		}
		return pc.bw.Flush()
	}
	var err error
	if len(head)+len(body) <= maxCoalesce {
		head = append(head, body...)
		_, err = pc.nc.Write(head)
	} else {
		bufs := net.Buffers{head, body}
		_, err = bufs.WriteTo(pc.nc)
	}
	if cap(head) <= maxCoalesce {
		pc.head = head // kept for the next request
	}
	return err
}

// maxCoalesce bounds the request a connection copies into its head buffer
// to send in one write.
const maxCoalesce = 16 << 10

// get returns a live pooled connection to addr or dials one.
func (c *h1Client) get(ctx context.Context, addr string) (*h1Conn, error) {
	now := time.Now()
	for {
		c.mu.Lock()
		list := c.idle[addr]
		if len(list) == 0 {
			c.mu.Unlock()
			break
		}
		pc := list[len(list)-1]
		list[len(list)-1] = nil
		c.idle[addr] = list[:len(list)-1]
		c.mu.Unlock()
		// Checked every time, however briefly idle: a server may close a
		// connection right after a response (shutting down, a request
		// cap) without saying so, and a POST sent on it could not be
		// replayed.
		if now.Sub(pc.idleAt) < c.idleTime && pc.alive() {
			pc.reused = true
			return pc, nil
		}
		pc.nc.Close()
	}
	nc, err := c.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	pc := &h1Conn{nc: nc, addr: addr}
	pc.lr.r = nc
	pc.br = bufio.NewReaderSize(&pc.lr, 4<<10)
	pc.bw = bufio.NewWriterSize(nc, 4<<10)
	return pc, nil
}

// alive says, without blocking, that the server has neither closed an idle
// connection nor sent anything unasked on it.
func (pc *h1Conn) alive() bool {
	if pc.br.Buffered() > 0 {
		return false
	}
	if pc.peekFn == nil {
		nc := pc.nc
		if tc, ok := nc.(*tls.Conn); ok {
			// Anything on the socket of an idle TLS connection is a close
			// notification or something else we did not ask for.
			nc = tc.NetConn()
		}
		sc, ok := nc.(syscall.Conn)
		if !ok {
			return true
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		// Made once per connection, so that a check allocates nothing.
		pc.raw, pc.peekFn = rc, pc.peek
	}
	pc.live = false
	return pc.raw.Read(pc.peekFn) == nil && pc.live
}

// peek is pc.peekFn: it looks at the socket without taking anything from it.
func (pc *h1Conn) peek(fd uintptr) bool {
	pc.live = rawtcp.PeekIdle(fd, pc.peekBuf[:])
	return true
}

func (c *h1Client) put(pc *h1Conn) {
	pc.idleAt = time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	list := c.idle[pc.addr]
	if len(list) >= c.maxIdle {
		pc.nc.Close()
		return
	}
	c.idle[pc.addr] = append(list, pc)
	if c.sweep == nil {
		c.sweep = time.AfterFunc(c.idleTime, c.expire)
	}
}

// expire closes connections idle for longer than idleTime.
func (c *h1Client) expire() {
	now := time.Now()
	var old []*h1Conn
	c.mu.Lock()
	next := time.Duration(0)
	for addr, list := range c.idle {
		keep := list[:0]
		for _, pc := range list {
			if age := now.Sub(pc.idleAt); age >= c.idleTime {
				old = append(old, pc)
			} else {
				keep = append(keep, pc)
				if left := c.idleTime - age; next == 0 || left < next {
					next = left
				}
			}
		}
		clear(list[len(keep):])
		if len(keep) == 0 {
			delete(c.idle, addr)
		} else {
			c.idle[addr] = keep
		}
	}
	c.sweep = nil
	if next > 0 {
		c.sweep = time.AfterFunc(next, c.expire)
	}
	c.mu.Unlock()
	for _, pc := range old {
		pc.nc.Close()
	}
}

// CloseIdleConnections closes every pooled connection and the fallback's.
func (c *h1Client) CloseIdleConnections() {
	c.mu.Lock()
	idle := c.idle
	c.idle = map[string][]*h1Conn{}
	if c.sweep != nil {
		c.sweep.Stop()
		c.sweep = nil
	}
	c.mu.Unlock()
	for _, list := range idle {
		for _, pc := range list {
			pc.nc.Close()
		}
	}
	if ci, ok := c.fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}
