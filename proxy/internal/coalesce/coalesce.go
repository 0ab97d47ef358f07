// Package coalesce sends the small writes a connection gets in one round of
// work as one system call, the way an event loop sends what a round produced
// at its end.
//
// Go's HTTP/2 server and client flush after every frame when nothing else is
// queued at that instant: a proxied gRPC call (response headers, data and
// trailers on one side, request headers and data on the other) took about
// eight write calls through one proxy. A Conn accepts a write into its
// buffer and starts a goroutine that yields once before sending, so the
// frames the other runnable goroutines produce meanwhile (the handler's next
// frame, the server loop's flush) join the same write. The send happens
// before the scheduler looks for new network input, so nothing waits for a
// timer; a round that produces a single frame pays one goroutine start more.
//
// Write reports success once the bytes are buffered. A failure to send is
// returned by the next Write, and by Close; the connection is then dead (as
// a crypto/tls connection is after a failed write). At most maxBuffered
// bytes wait; a write that would exceed it sends everything at once on the
// caller. Close, and a write deadline that has passed, send what is
// buffered first.
package coalesce

import (
	"net"
	"os"
	"runtime"
	"sync"
	"time"
)

const (
	// maxBuffered bounds what waits for the flusher: above it the writer
	// sends itself, which also passes the peer's backpressure on.
	maxBuffered = 64 << 10
	// keepBuffer is the largest buffer kept between rounds; larger ones,
	// grown by a burst, go back to the garbage collector.
	keepBuffer = 8 << 10
	// closeFlushTime bounds how long Close waits to send what is buffered.
	closeFlushTime = time.Second
)

// Conn is a net.Conn whose writes are coalesced. Reads, read deadlines and
// addresses are the underlying connection's.
type Conn struct {
	net.Conn

	wmu sync.Mutex // held while sending: keeps the socket's writes in order

	mu        sync.Mutex
	buf       []byte // accepted, not yet sent
	spare     []byte // the other buffer, empty, reused by the next round
	scheduled bool   // a flusher will take buf
	closed    bool
	direct    bool      // Direct was called: writes are no longer buffered
	deadline  time.Time // the write deadline last set
	err       error     // the first failed send; every later Write returns it

	// flushLaterFn is c.flushLater, made once: a go statement with a
	// method call allocates a closure each time, one with a func value
	// does not, and a round starts one.
	flushLaterFn func()
}

// New wraps c.
func New(c net.Conn) *Conn {
	cc := &Conn{Conn: c}
	cc.flushLaterFn = cc.flushLater
	return cc
}

// Write buffers p for the next flush, or sends it with what is buffered
// when together they exceed the bound.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if err := c.errLocked(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	if !c.direct && len(c.buf)+len(p) <= maxBuffered {
		c.buf = append(c.buf, p...)
		if !c.scheduled {
			c.scheduled = true
			go c.flushLaterFn()
		}
		c.mu.Unlock()
		return len(p), nil
	}
	c.mu.Unlock()

	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if err := c.errLocked(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	b := c.buf
	c.buf = nil
	c.mu.Unlock()
	if len(b) == 0 {
		n, err := c.Conn.Write(p)
		if err != nil {
			c.fail(err)
		}
		return n, err
	}
	bufs := net.Buffers{b, p}
	n, err := bufs.WriteTo(c.Conn)
	c.recycle(b)
	if err != nil {
		c.fail(err)
		return max(int(n)-len(b), 0), err
	}
	return len(p), nil
}

// Direct sends what is buffered and makes every later Write go straight to
// the connection: for a connection that turned out not to need coalescing
// (a TLS connection whose peer chose HTTP/1.1).
func (c *Conn) Direct() {
	c.mu.Lock()
	c.direct = true
	c.mu.Unlock()
	c.flush()
}

func (c *Conn) errLocked() error {
	if c.err != nil {
		return c.err
	}
	if c.closed {
		return net.ErrClosed
	}
	if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		return os.ErrDeadlineExceeded
	}
	return nil
}

// flushLater sends buf once the goroutines made runnable with it had their
// turn.
func (c *Conn) flushLater() {
	runtime.Gosched()
	c.flush()
}

// flush sends what is buffered.
func (c *Conn) flush() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.send()
}

// flushBounded is flush for a peer that may not read: a send under way
// and its own get at most closeFlushTime each.
func (c *Conn) flushBounded() {
	if !c.wmu.TryLock() {
		// A flusher holds bytes it took from buf: let it finish, bounded.
		c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTime))
		c.wmu.Lock()
	}
	defer c.wmu.Unlock()
	c.mu.Lock()
	pending := len(c.buf) > 0 && c.err == nil
	c.mu.Unlock()
	if pending {
		c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTime))
	}
	c.send()
}

// send takes buf and writes it; the caller holds wmu.
func (c *Conn) send() {
	c.mu.Lock()
	c.scheduled = false
	b := c.buf
	c.buf = c.spare[:0]
	c.spare = nil
	broken := c.err != nil
	c.mu.Unlock()
	if len(b) == 0 || broken {
		c.recycle(b)
		return
	}
	_, err := c.Conn.Write(b)
	c.recycle(b)
	if err != nil {
		c.fail(err)
	}
}

// recycle keeps b, emptied, as the spare buffer when it is small.
func (c *Conn) recycle(b []byte) {
	if cap(b) == 0 || cap(b) > keepBuffer {
		return
	}
	c.mu.Lock()
	if c.spare == nil {
		c.spare = b[:0]
	}
	c.mu.Unlock()
}

func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

// Flush sends what is buffered now, on the caller.
func (c *Conn) Flush() error {
	c.flush()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close sends what is buffered, after a send already under way (waiting at
// most a second for each, for a peer that does not read), and closes the
// connection. It returns the error of a send that failed, if any.
func (c *Conn) Close() error {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	c.mu.Unlock()
	if already {
		return c.Conn.Close()
	}
	c.flushBounded()
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if cerr := c.Conn.Close(); err == nil {
		err = cerr
	}
	return err
}

// SetDeadline is SetWriteDeadline's rule and the read deadline.
func (c *Conn) SetDeadline(t time.Time) error {
	c.beforeWriteDeadline(t)
	return c.Conn.SetDeadline(t)
}

// SetWriteDeadline applies t to the sends still to come. A deadline that
// has passed ends writing (crypto/tls sets one right after its close_notify
// alert): what was written before it is sent first, waiting at most a
// second, and later writes fail at once.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.beforeWriteDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *Conn) beforeWriteDeadline(t time.Time) {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	if !t.IsZero() && !t.After(time.Now()) {
		c.flushBounded()
	}
}

// CloseWrite sends what is buffered and half-closes when the underlying
// connection can; otherwise it closes.
func (c *Conn) CloseWrite() error {
	if err := c.Flush(); err != nil {
		return err
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
