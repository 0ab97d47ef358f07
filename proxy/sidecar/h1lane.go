package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/weftmesh/weft/proxy/internal/h1wire"
	"github.com/weftmesh/weft/proxy/internal/rawtcp"
	"github.com/weftmesh/weft/proxy/upstream"
)

// The HTTP/1.1 lane serves the plain requests of an application's
// connection on the goroutine that owns it, without net/http's server:
// that server reads each connection from a second goroutine while a
// request is handled (to notice a client that goes away), gives every
// request a cancelable context and clones its header map on WriteHeader,
// which was about a sixth of the proxy's CPU for HTTP/1.1.
//
// Only plain requests stay in the lane: HTTP/1.1, a head that parses and
// fits the 4 KiB read buffer, exactly one valid Host, a body of known length
// or none, no Transfer-Encoding, Expect or Upgrade, and not CONNECT. At the
// first other request (or anything that does not parse) the connection,
// with that request still unread, goes to net/http's server for the rest of
// its life, which serves it or answers its error as before.
//
// A client that goes away is noticed as net/http notices it, by a read of
// the connection while the request is handled, whose end cancels the
// request's context (and with it the upstream exchange). The lane starts
// that read only for a request that is still being handled after
// laneWatchAfter, once its body has been read: most requests end sooner,
// and their read, its goroutine and its abort cost more than the rest of
// the lane's work. Unlike net/http the lane never sniffs a Content-Type.

// laneState tells the drain what a lane connection is doing.
const (
	laneNone   int32 = iota
	laneIdle         // waiting for the next request
	laneActive       // reading or serving a request
	laneWoken        // idle, then interrupted by the drain: closes
)

// laneWatchAfter is how long a request is handled before the lane watches
// for its client going away.
const laneWatchAfter = 100 * time.Millisecond

// maxLaneDrain is how much of an unread request body the lane reads to keep
// the connection, as net/http does (256 KiB).
const maxLaneDrain = 256 << 10

// serveH1 serves c's requests with h until c closes, ends with an error,
// or meets a request the lane leaves to q's server. tracked is the
// accepted connection under c (c itself, or the one under its TLS and
// guard layers), which the drain sees.
func (p *Proxy) serveH1(c, tracked *conn, q *queue, h http.Handler) {
	if c.br == nil {
		c.br = bufio.NewReaderSize(c.Conn, 4096)
	}
	c.keepBuf = true
	l := &lane{p: p, c: c, tracked: tracked, h: h, br: c.br}
	if pr, ok := rawtcp.NewPooledReader(c.Conn, &laneChunks); ok {
		l.pr = pr
		l.lent.c = c.Conn
	}
	l.ctx = context.WithValue(context.Background(), infoKey{}, c.info)
	l.ctx = upstream.WithObserved(upstream.WithAbortSlot(l.ctx, &l.abort), &l.obs)
	l.remote = c.RemoteAddr().String()
	handoff := l.serve()
	if l.timer != nil {
		l.timer.Stop()
	}
	if handoff {
		tracked.lane.Store(laneNone)
		c.SetReadDeadline(time.Time{})
		c.keepBuf = false // what is buffered is read first, then the socket
		if !q.push(context.Background(), c) {
			c.Close()
		}
		return
	}
	if l.linger {
		l.closeWriteAndWait()
	}
	c.Close()
}

// closeWriteAndWait ends the connection after a response while the client
// may still be sending (a body the lane did not read, pipelined requests):
// closing at once would make the kernel answer those bytes with a reset,
// which can destroy the response before the client reads it. It sends a
// FIN and reads until the client closes too, for at most lingerTime.
func (l *lane) closeWriteAndWait() {
	// On the accepted socket: under TLS this skips close_notify, which
	// the closing proxy need not send, and the reads only discard.
	raw := l.tracked.Conn
	cw, ok := raw.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	raw.SetReadDeadline(time.Now().Add(lingerTime))
	io.Copy(io.Discard, raw)
}

// lingerTime bounds closeWriteAndWait, like net/http's 500 ms.
const lingerTime = 500 * time.Millisecond

type lane struct {
	p       *Proxy
	c       *conn // read and written
	tracked *conn // accepted; its lane state is the drain's
	h       http.Handler
	br      *bufio.Reader
	ctx     context.Context
	remote  string
	obs     upstream.Observed // what the request served went to (serveOutbound)

	hb   bytes.Reader  // the head being parsed
	bw   *bufio.Writer // responses; nil between requests on a plain socket
	body *laneBody     // of the request being served (nil without one), under wmu
	w    laneWriter

	// On a plain socket (pr not nil) the lane waits for the next request
	// without its buffers, which go back to their pools: the first bytes
	// come in a chunk lent by laneChunks, which the next reader gets
	// through lent.
	pr   *rawtcp.PooledReader
	lent lentReader

	// The watch for a client that goes away (see laneWatchAfter).
	timer     *time.Timer
	wmu       sync.Mutex
	handling  bool               // the handler runs: the watch may start
	cancel    context.CancelFunc // the request's context
	watchDone chan error         // the watching read's end, nil if none
	stopping  atomic.Bool        // the lane ends the watching read itself

	linger bool // a response was sent before the lane closes

	// The upstream connection of the request served, aborted when the
	// request's context is canceled.
	abort upstream.AbortSlot
}

// serve runs requests until the connection should close (false) or be
// handed to net/http (true).
func (l *lane) serve() (handoff bool) {
	first, lastPost := true, false
	l.tracked.lane.Store(laneActive) // later requests: by the swap below
	for {
		if !first {
			// In this order: the drain sets draining, then interrupts the
			// idle lanes' reads, so it either finds this lane idle after
			// its deadline was set or is seen here.
			l.tracked.lane.Store(laneIdle)
			l.c.SetReadDeadline(time.Now().Add(l.p.cfg.IdleTimeout))
			if l.p.draining.Load() {
				// The last response may have gone before the drain began,
				// without Connection: close: wait for what the client
				// still sends rather than reset it. Out of the idle state
				// first, and after any interruption under way has set its
				// deadline, so that it cannot cut the linger short.
				l.tracked.lane.CompareAndSwap(laneIdle, laneActive)
				l.p.conns.settle()
				l.linger = true
				return false
			}
			err := l.waitRequest()
			if err == nil && lastPost {
				// RFC 9112 section 2.2 tolerance for old clients that end
				// a POST body with an extra CRLF, as net/http has it;
				// still idle for the drain while it waits past them.
				b, _ := l.br.Peek(min(4, l.br.Buffered()))
				if n := leadingCRorLF(b); n > 0 {
					l.br.Discard(n)
					_, err = l.br.Peek(1)
				}
			}
			// The drain interrupts only a lane it finds idle, and this
			// one from now on only sees it idle if it did.
			if !l.tracked.lane.CompareAndSwap(laneIdle, laneActive) || err != nil {
				return false
			}
		}
		head, ok := l.peekHead()
		first = false
		if !ok {
			return true
		}
		req, ok := l.parse(head)
		if !ok {
			return true
		}
		l.br.Discard(len(head))
		lastPost = req.Method == http.MethodPost
		if !l.serveOne(req) {
			return false
		}
	}
}

// Buffers of the lanes between requests (see waitRequest).
var (
	laneReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, laneBufSize) }}
	laneWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, laneBufSize) }}
	laneChunks  = sync.Pool{New: func() any { b := make([]byte, laneBufSize); return &b }}
)

// laneBufSize is the size of a lane's read and write buffers, and so the
// longest request head the lane serves.
const laneBufSize = 4096

// waitRequest waits for the first bytes of the next request. On a plain
// socket with nothing buffered it gives the read and write buffers back
// first, and waits with none: a client's pool of keep-alive connections is
// mostly idle, and two 4 KiB buffers were most of what an idle connection
// held. The bytes that end the wait are read into a lent chunk, which the
// next reader copies from, so the wait costs no system call more.
func (l *lane) waitRequest() error {
	if l.pr == nil || l.br.Buffered() > 0 {
		_, err := l.br.Peek(1)
		return err
	}
	l.putBuffers()
	bp, n, err := l.pr.Read()
	l.lend(bp, n)
	if err == nil {
		// Into the reader's buffer now (no system call: the chunk holds
		// the bytes), as the Peek above leaves them, for what looks at
		// them before parsing; the chunk goes back to its pool.
		_, err = l.br.Peek(1)
	}
	return err
}

// putBuffers gives the read and write buffers back for the wait. It and
// lend are kept out of waitRequest so that the frames of a waiting lane fit
// in a quarter of an 8 KiB stack, which lets the garbage collector halve
// the stack of an idle connection.
//
//go:noinline
func (l *lane) putBuffers() {
	if l.bw != nil && l.bw.Buffered() == 0 {
		l.bw.Reset(nil)
		laneWriters.Put(l.bw)
		l.bw = nil
		// Nothing may write through the last response's writer now.
		l.w = laneWriter{hdr: l.w.hdr, scratch: l.w.scratch}
	}
	if l.br.Size() == laneBufSize {
		l.br.Reset(nil)
		laneReaders.Put(l.br)
	}
	l.br, l.c.br = nil, nil
}

// lend gives the lane a reader whose first bytes are the n in the chunk bp
// (none when bp is nil), then the socket's.
//
//go:noinline
func (l *lane) lend(bp *[]byte, n int) {
	l.lent.bp, l.lent.b = bp, nil
	if bp != nil {
		l.lent.b = (*bp)[:n]
	}
	br := laneReaders.Get().(*bufio.Reader)
	br.Reset(&l.lent)
	l.br, l.c.br = br, br
}

// lentReader reads what is left of a chunk lent by laneChunks, then the
// socket.
type lentReader struct {
	c  io.Reader // the socket
	bp *[]byte   // the chunk, nil once read
	b  []byte    // its bytes not yet read
}

func (r *lentReader) Read(p []byte) (int, error) {
	if r.bp == nil {
		return r.c.Read(p)
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	if len(r.b) == 0 {
		laneChunks.Put(r.bp)
		r.bp, r.b = nil, nil
	}
	return n, nil
}

// peekHead returns the next request head (through its blank line) without
// consuming it, reading more under the header timeout when the buffer does
// not hold it yet. ok is false when the head is not there in full within
// the buffer (too long, a timeout, an error): net/http's server takes over
// and reads or refuses it.
func (l *lane) peekHead() (head []byte, ok bool) {
	deadline := false
	defer func() {
		if deadline {
			l.c.SetReadDeadline(time.Time{})
		}
	}()
	for {
		b, _ := l.br.Peek(l.br.Buffered())
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			return b[:i+4], crlfOnly(b[:i+4])
		}
		if bytes.Contains(b, []byte("\n\n")) {
			return nil, false // bare LF line ends: not the lane's
		}
		if len(b) == l.br.Size() {
			return nil, false
		}
		if !deadline {
			deadline = true
			l.c.SetReadDeadline(time.Now().Add(l.p.cfg.HeaderTimeout))
		}
		if _, err := l.br.Peek(len(b) + 1); err != nil {
			return nil, false
		}
	}
}

// leadingCRorLF counts the CR and LF bytes that start b.
func leadingCRorLF(b []byte) int {
	n := 0
	for n < len(b) && (b[n] == '\r' || b[n] == '\n') {
		n++
	}
	return n
}

// headReaders parse the heads the lanes peeked. Pooled rather than one per
// connection: a parse never waits, so a few serve every connection.
var headReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// crlfOnly says that every line of head ends with CRLF and that it has no
// other CR or LF: the lane counts Host fields by CRLF lines, so a head that
// another reader could split differently is left to net/http.
func crlfOnly(head []byte) bool {
	for i, c := range head {
		switch c {
		case '\r':
			if i+1 >= len(head) || head[i+1] != '\n' {
				return false
			}
		case '\n':
			if i == 0 || head[i-1] != '\r' {
				return false
			}
		}
	}
	return true
}

// parse reads the request in head and says whether the lane serves it.
func (l *lane) parse(head []byte) (*http.Request, bool) {
	// Cheap refusals before parsing: another protocol version, the h2c
	// preface, CONNECT.
	line, fields, _ := bytes.Cut(head, []byte("\r\n"))
	if !bytes.HasSuffix(line, []byte(" HTTP/1.1")) || bytes.HasPrefix(line, []byte("CONNECT ")) {
		return nil, false
	}
	// Exactly one Host field, and no folded lines: ReadRequest drops the
	// Host field it read, and net/http's server refuses the others.
	hosts := 0
	for f := range bytes.SplitSeq(fields, []byte("\r\n")) {
		if len(f) > 0 && (f[0] == ' ' || f[0] == '\t') {
			return nil, false
		}
		if len(f) >= 5 && f[4] == ':' && bytes.EqualFold(f[:4], []byte("host")) {
			hosts++
		}
	}
	if hosts != 1 {
		return nil, false
	}
	if req, ok := parseRequestHead(head); ok {
		return req, true
	}
	return l.readRequest(head)
}

// readRequest reads head with http.ReadRequest, for what parseRequestHead
// leaves to it, and says whether the lane serves it.
func (l *lane) readRequest(head []byte) (*http.Request, bool) {
	l.hb.Reset(head)
	hr := headReaders.Get().(*bufio.Reader)
	hr.Reset(&l.hb)
	req, err := http.ReadRequest(hr)
	hr.Reset(nil)
	headReaders.Put(hr)
	l.hb.Reset(nil) // head lies in the read buffer, which may go to a pool
	if err != nil || req.ProtoMajor != 1 || req.ProtoMinor != 1 || req.Method == http.MethodConnect {
		return nil, false
	}
	// Origin form only ("/path"): the Host field is then req.Host.
	if len(req.RequestURI) == 0 || req.RequestURI[0] != '/' {
		return nil, false
	}
	if req.Host == "" || !httpguts.ValidHostHeader(req.Host) {
		return nil, false
	}
	hd := req.Header
	for k, vv := range hd {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, false
			}
		}
	}
	for _, k := range []string{"Transfer-Encoding", "Expect", "Upgrade", "Trailer"} {
		if _, ok := hd[k]; ok {
			return nil, false
		}
	}
	if req.ContentLength < 0 || len(req.TransferEncoding) > 0 {
		return nil, false
	}
	return req, true
}

// parseRequestHead reads head (request line, fields, empty line; CRLF
// only) as http.ReadRequest would, for the requests nearly every client
// sends, and only when the lane serves the result: an origin-form HTTP/1.1
// request other than CONNECT, one valid Host field, at most one
// Content-Length, no Transfer-Encoding, Expect, Upgrade, Trailer or Pragma
// field, no obs-fold, no control character. ok false leaves head to
// readRequest, which decides.
//
// Field names and values are substrings of one copy of the head: with the
// request, its URL, the map and the values' slice, six allocations where
// readRequest made fourteen for a typical request (a string per line and
// value, and two body readers the lane replaces anyway).
func parseRequestHead(head []byte) (*http.Request, bool) {
	s := string(head)
	line, rest, _ := strings.Cut(s, "\r\n")
	method, target, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(target, " ")
	if !ok1 || !ok2 || proto != "HTTP/1.1" || method == http.MethodConnect || !httpguts.ValidHeaderFieldName(method) ||
		target == "" || target[0] != '/' || !h1wire.ValidValue(line) {
		return nil, false
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, false
	}
	f, ok := h1wire.ParseFields(rest, refuseInLane)
	if !ok {
		return nil, false
	}
	hosts := f.Header["Host"]
	if len(hosts) != 1 || hosts[0] == "" || !httpguts.ValidHostHeader(hosts[0]) {
		return nil, false
	}
	delete(f.Header, "Host") // as ReadRequest does
	req := &http.Request{
		Method: method, URL: u, Proto: proto, ProtoMajor: 1, ProtoMinor: 1,
		Header: f.Header, Host: hosts[0], Close: f.Close, RequestURI: target,
	}
	if f.Length > 0 {
		req.ContentLength = f.Length // the lane gives it a body
	} else {
		req.Body = http.NoBody
	}
	return req, true
}

// refuseInLane names the fields the lane leaves to net/http's server, and
// Pragma, whose Cache-Control ReadRequest adds.
func refuseInLane(k string) bool {
	switch k {
	case "Transfer-Encoding", "Expect", "Upgrade", "Trailer", "Pragma":
		return true
	}
	return false
}

// serveOne runs the handler for req and finishes its response. It says
// whether the connection may serve another request.
func (l *lane) serveOne(req *http.Request) (keep bool) {
	if l.p.cfg.IdleTimeout > 0 && req.ContentLength > 0 {
		// The idle deadline of the wait for this request must not cut its
		// body short.
		l.c.SetReadDeadline(time.Time{})
	}
	ctx, cancel := context.WithCancel(l.ctx)
	l.abort.Start(ctx.Done())
	defer func() {
		cancel() // first: a read the abort fails then reports the cancellation
		l.abort.End()
	}()
	req = req.WithContext(ctx)

	req.RemoteAddr = l.remote
	// A body of its own for every request: a reader left over from the
	// last one (a transport goroutine still sending it) must find it
	// ended, not read this request's.
	var body *laneBody
	req.Body = http.NoBody
	if req.ContentLength > 0 {
		body = &laneBody{br: l.br, left: req.ContentLength}
		body.leftA.Store(req.ContentLength)
		req.Body = body
	}
	l.startTimer(cancel, body)
	if l.bw == nil {
		l.bw = laneWriters.Get().(*bufio.Writer)
		l.bw.Reset(l.c.Conn)
	}
	// The writer and its header map are the lane's, reset for each
	// request: nothing keeps them once the handler has returned.
	if l.w.hdr == nil {
		l.w.hdr = make(http.Header, 8)
	}
	clear(l.w.hdr)
	l.w = laneWriter{bw: l.bw, req: req, body: body, hdr: l.w.hdr, cl: -1, scratch: l.w.scratch,
		closeAfter: req.Close, draining: &l.p.draining}
	w := &l.w
	handled := l.run(w, req)
	gone, halfClosed := l.stopWatch()
	if gone || !handled {
		return false
	}
	w.finish()
	if halfClosed {
		// The client sent its last request and shut its side: it still
		// reads the answer (net/http sends it too), then we close.
		return false
	}
	if w.err != nil {
		return false
	}
	if w.closeAfter {
		l.linger = true
		return false
	}
	// Read what the handler left of the body, up to a bound, to reach the
	// next request. The deadline also bounds a read still running for the
	// handler (a transport goroutine sending the body), which finish waits
	// for.
	if body == nil {
		return true
	}
	if body.unread() {
		l.c.SetReadDeadline(time.Now().Add(l.p.cfg.HeaderTimeout))
		defer l.c.SetReadDeadline(time.Time{})
	}
	left := body.finish()
	if left > maxLaneDrain {
		l.linger = true
		return false
	}
	if left > 0 {
		if _, err := l.br.Discard(int(left)); err != nil {
			return false
		}
	}
	return true
}

// startTimer arms the watch for the request being handled.
// A callback of the last request's timer that Stop came too late for may
// start this one's watch early, which is harmless.
func (l *lane) startTimer(cancel context.CancelFunc, body *laneBody) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.handling, l.cancel, l.body = true, cancel, body
	// Made and reset under wmu, where watch resets it too.
	if l.timer == nil {
		l.timer = time.AfterFunc(laneWatchAfter, l.watch)
	} else {
		l.timer.Reset(laneWatchAfter)
	}
}

// watch runs when a request has been handled for laneWatchAfter: once its
// body has been read, a read of the connection waits for the client's
// next bytes (left buffered for the next request) or for its end, which
// cancels the request.
func (l *lane) watch() {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if !l.handling || l.watchDone != nil {
		return
	}
	if l.body != nil && l.body.unread() {
		// The body's own reads see the client go; look again later.
		l.timer.Reset(laneWatchAfter)
		return
	}
	done := make(chan error, 1)
	l.watchDone = done
	cancel := l.cancel
	l.c.SetReadDeadline(time.Time{}) // the idle deadline of the wait before
	go func() {
		_, err := l.br.Peek(1)
		if err != nil && !l.stopping.Load() {
			cancel()
			l.abort.End()
		}
		done <- err
	}()
}

// stopWatch ends the watch after the handler returned. gone says the
// connection broke meanwhile, halfClosed that the client shut its sending
// side (EOF), as a client that sends one request and waits may do: the
// request's context was canceled in both cases, as net/http does.
func (l *lane) stopWatch() (gone, halfClosed bool) {
	l.timer.Stop()
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.handling, l.cancel = false, nil
	done := l.watchDone
	if done == nil {
		return false, false
	}
	l.watchDone = nil
	l.stopping.Store(true)
	l.c.SetReadDeadline(aLongTimeAgo)
	err := <-done
	l.c.SetReadDeadline(time.Time{})
	l.stopping.Store(false)
	switch {
	case err == nil:
		return false, false // the next request is already here
	case err == io.EOF:
		return false, true
	case !isTimeout(err):
		return true, false
	}
	// Our deadline ended the read: bufio keeps that error for the next
	// read, which an empty Read takes.
	if l.br.Buffered() == 0 {
		l.br.Read(nil)
	}
	return false, false
}

// run calls the handler; false if it panicked, which closes the
// connection. http.ErrAbortHandler is how a handler breaks a response it
// cannot finish; anything else is also logged.
func (l *lane) run(w *laneWriter, req *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				l.p.log.Error("Panic serving HTTP/1.1", "client", l.remote, "panic", fmt.Sprint(v), "stack", string(buf))
			}
			ok = false
		}
	}()
	l.h.ServeHTTP(w, req)
	return true
}

// laneBody is a request body of known length read from the connection's
// buffer. It ends when the handler returns; a later read (a transport
// goroutine still sending the body) gets an error instead of the next
// request.
type laneBody struct {
	mu   sync.Mutex // held by a read, which may wait for the client
	br   *bufio.Reader
	left int64
	done bool
	// leftA mirrors left (0 once done) for the watch and the writer,
	// which must not wait behind a read.
	leftA atomic.Int64
}

var errBodyAfterHandler = errors.New("http: invalid Read on closed Body")

func (b *laneBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return 0, errBodyAfterHandler
	}
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.br.Read(p)
	b.left -= int64(n)
	b.leftA.Store(b.left)
	if err == io.EOF && b.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && b.left == 0 {
		err = io.EOF
	}
	return n, err
}

func (b *laneBody) Close() error { return nil }

// unread says whether some of the body is still to be read.
func (b *laneBody) unread() bool {
	return b.leftA.Load() > 0
}

// finish ends the body for the handler and returns how much of it is left
// unread. A nil body has nothing left.
func (b *laneBody) finish() int64 {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done = true
	b.leftA.Store(0)
	return b.left
}

// laneWriter is the lane's http.ResponseWriter. The status line and the
// handler's fields are written into the connection's buffer at
// WriteHeader (net/http takes its copy of the header map there too); the
// framing fields follow at the first Write, Flush or the handler's return,
// when the lane knows whether the body is empty: Content-Length when the
// handler set it or wrote nothing, chunked otherwise.
type laneWriter struct {
	bw   *bufio.Writer
	req  *http.Request
	body *laneBody // the request's, nil without one
	hdr  http.Header

	status     int   // final status, 0 until WriteHeader
	headDone   bool  // the head's blank line is written
	noBody     bool  // HEAD, 204 or 304: no body, no framing added
	isHead     bool  // a HEAD request
	cl         int64 // declared Content-Length, -1 if none
	chunked    bool
	written    int64
	closeAfter bool
	draining   *atomic.Bool // the proxy's: close after this response
	err        error
	scratch    []byte
}

func (w *laneWriter) Header() http.Header { return w.hdr }

func (w *laneWriter) WriteHeader(code int) {
	if w.status != 0 {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	b := w.scratch[:0]
	b = appendStatusLine(b, code)
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// Informational: out now, with the fields set so far but for
		// the framing ones, which a 1xx never has.
		for k, vv := range w.hdr {
			if k == "Content-Length" || k == "Transfer-Encoding" {
				continue
			}
			for _, v := range vv {
				b = h1wire.AppendField(b, k, v)
			}
		}
		b = append(b, "\r\n"...)
		w.write(b)
		w.flush()
		w.scratch = b[:0]
		return
	}
	w.status = code
	w.isHead = w.req.Method == http.MethodHead
	w.noBody = w.isHead || code == http.StatusNoContent || code == http.StatusNotModified
	if v := w.hdr["Content-Length"]; len(v) == 1 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 {
			w.cl = n
		}
	}
	if c := w.hdr["Connection"]; len(c) > 0 && h1wire.HasToken(c[0], "close") {
		w.closeAfter = true
	}
	_, hasDate := w.hdr["Date"]
	for k, vv := range w.hdr {
		switch k {
		case "Content-Length", "Transfer-Encoding", "Connection":
			continue
		}
		if _, ok := trailerKey(k); ok {
			continue
		}
		for _, v := range vv {
			b = h1wire.AppendField(b, k, v)
		}
	}
	if !hasDate {
		b = append(b, "Date: "...)
		b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
		b = append(b, "\r\n"...)
	}
	w.write(b)
	w.scratch = b[:0]
}

// endHead writes the framing fields and the blank line. done says the
// handler has returned.
func (w *laneWriter) endHead(done bool) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.headDone = true
	b := w.scratch[:0]
	switch {
	case w.noBody:
		if w.cl >= 0 && (w.isHead || w.status == http.StatusNotModified) {
			b = append(b, "Content-Length: "...)
			b = strconv.AppendInt(b, w.cl, 10)
			b = append(b, "\r\n"...)
		}
	case w.cl >= 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, w.cl, 10)
		b = append(b, "\r\n"...)
	case done && w.written == 0 && !w.trailers():
		b = append(b, "Content-Length: 0\r\n"...)
		w.cl = 0
	default:
		w.chunked = true
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	if w.draining.Load() {
		w.closeAfter = true
	}
	if w.body != nil && w.body.leftA.Load() > maxLaneDrain {
		// The lane will not read that much to reach a next request: say
		// so, as net/http does, so that the client does not send one.
		w.closeAfter = true
	}
	if w.closeAfter {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	w.write(b)
	w.scratch = b[:0]
}

// trailers says whether the handler announced or set trailers.
func (w *laneWriter) trailers() bool {
	if _, ok := w.hdr["Trailer"]; ok {
		return true
	}
	for k := range w.hdr {
		if _, ok := trailerKey(k); ok {
			return true
		}
	}
	return false
}

// trailerKey returns the trailer name of a header key set with
// http.TrailerPrefix.
func trailerKey(k string) (string, bool) {
	name, ok := strings.CutPrefix(k, http.TrailerPrefix)
	return name, ok && name != ""
}

func (w *laneWriter) Write(p []byte) (int, error) {
	if !w.headDone {
		w.endHead(false)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.noBody {
		if w.isHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		return 0, http.ErrContentLength
	}
	if len(p) == 0 {
		return 0, nil
	}
	w.written += int64(len(p))
	if w.chunked {
		w.scratch = append(strconv.AppendInt(w.scratch[:0], int64(len(p)), 16), "\r\n"...)
		w.write(w.scratch)
		w.write(p)
		w.write([]byte("\r\n"))
	} else {
		w.write(p)
	}
	if w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// FlushError sends what is buffered; http.ResponseController finds it.
func (w *laneWriter) FlushError() error {
	if !w.headDone {
		w.endHead(false)
	}
	w.flush()
	return w.err
}

// Flush is http.Flusher's, for handlers that assert it.
func (w *laneWriter) Flush() { w.FlushError() }

// finish ends the response after the handler returned: the head if
// nothing was written, the last chunk and the trailers, then a flush. A
// body shorter than its Content-Length closes the connection after it.
func (w *laneWriter) finish() {
	if !w.headDone {
		w.endHead(true)
	}
	if w.chunked {
		b := append(w.scratch[:0], "0\r\n"...)
		for _, v := range w.hdr["Trailer"] {
			for k := range strings.SplitSeq(v, ",") {
				if k = strings.TrimSpace(k); k == "" {
					continue
				}
				k = http.CanonicalHeaderKey(k)
				for _, tv := range w.hdr[k] {
					b = h1wire.AppendField(b, k, tv)
				}
			}
		}
		for k, vv := range w.hdr {
			if name, ok := trailerKey(k); ok {
				for _, v := range vv {
					b = h1wire.AppendField(b, name, v)
				}
			}
		}
		b = append(b, "\r\n"...)
		w.write(b)
		w.scratch = b[:0]
	} else if !w.noBody && w.cl >= 0 && w.written < w.cl {
		w.closeAfter = true
	}
	w.flush()
}

func (w *laneWriter) write(b []byte) {
	if w.err == nil {
		_, w.err = w.bw.Write(b)
	}
}

func (w *laneWriter) flush() {
	if w.err == nil {
		w.err = w.bw.Flush()
	}
}

// appendStatusLine appends "HTTP/1.1 code text\r\n" as net/http writes it.
func appendStatusLine(b []byte, code int) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	if text := http.StatusText(code); text != "" {
		b = append(b, text...)
	} else {
		b = append(b, "status code "...)
		b = strconv.AppendInt(b, int64(code), 10)
	}
	return append(b, "\r\n"...)
}
