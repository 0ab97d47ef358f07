package sidecar

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/proxy/internal/coalesce"
)

// conn is an accepted connection with what the proxy learned about it. Reads
// drain the detection buffer first, then go to the socket.
type conn struct {
	net.Conn
	br   *bufio.Reader // nil once drained or never used
	info *connInfo
	// keepBuf keeps reading through br after detection: for HTTP/2, whose
	// server reads each frame's header and payload separately.
	keepBuf bool
	once    sync.Once
	done    func(*conn)
	// lane is the HTTP/1.1 lane's state (laneNone, laneIdle, laneActive,
	// laneWoken),
	// for the drain.
	lane atomic.Int32
}

// connInfo is per-connection data handed to HTTP handlers via ConnContext.
type connInfo struct {
	dir string
	// dst is where the client meant to go: SO_ORIGINAL_DST or the static
	// mapping of the listener.
	dst netip.AddrPort
	// dstAddr is dst as a string, made once per connection for the
	// passthrough's requests.
	dstAddr string
	// target is the application address for inbound connections.
	target string
	tls    bool
	peer   string // verified SPIFFE ID of the client proxy, inbound only
	// tunnel is set once the connection carries bytes the proxy does not
	// read: opaque TCP, or a tunnel after an upgrade. The idle sweep
	// (sweepIdle) watches only those; HTTP connections have their own
	// idle timeout.
	tunnel atomic.Bool
}

func (c *conn) Read(p []byte) (int, error) {
	if c.br != nil {
		if c.keepBuf || c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br = nil
	}
	return c.Conn.Read(p)
}

// buffered returns and forgets the bytes read during detection.
func (c *conn) buffered() []byte {
	if c.br == nil {
		return nil
	}
	b, _ := c.br.Peek(c.br.Buffered())
	out := append([]byte(nil), b...)
	c.br = nil
	return out
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.done(c) })
	return err
}

// CloseWrite lets the pipe half-close through the wrapper.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// queue is a net.Listener fed by the proxy's own accept loop after detection,
// so that one http.Server serves every HTTP connection of a direction.
type queue struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
	addr   net.Addr
}

func newQueue(addr net.Addr) *queue {
	return &queue{ch: make(chan net.Conn), closed: make(chan struct{}), addr: addr}
}

func (q *queue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.closed:
		return nil, net.ErrClosed
	}
}

// push hands c to the server; false if the server is gone.
func (q *queue) push(ctx context.Context, c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.closed:
		return false
	case <-ctx.Done():
		return false
	}
}

func (q *queue) Close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}

func (q *queue) Addr() net.Addr { return q.addr }

// tracker counts open connections for the cap and the drain.
type tracker struct {
	mu    sync.Mutex
	conns map[*conn]struct{}
	max   int
	empty chan struct{} // closed when draining and the set empties
	drain bool
}

func (t *tracker) add(c *conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.drain || (t.max > 0 && len(t.conns) >= t.max) {
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *tracker) remove(c *conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
	if t.drain && len(t.conns) == 0 && t.empty != nil {
		close(t.empty)
		t.empty = nil
	}
}

// startDrain refuses new connections and returns a channel closed once the
// open ones are gone.
func (t *tracker) startDrain() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.drain = true
	ch := make(chan struct{})
	if len(t.conns) == 0 {
		close(ch)
	} else {
		t.empty = ch
	}
	return ch
}

func (t *tracker) closeAll() {
	t.mu.Lock()
	cs := make([]*conn, 0, len(t.conns))
	for c := range t.conns {
		cs = append(cs, c)
	}
	t.mu.Unlock()
	for _, c := range cs {
		c.Conn.Close()
	}
}

// wakeIdleLanes interrupts the lane connections waiting for a request, so
// that they see the drain and close.
func (t *tracker) wakeIdleLanes() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		// Only a lane still idle: one that has just taken a request keeps
		// its reads and answers with Connection: close.
		if c.lane.CompareAndSwap(laneIdle, laneWoken) {
			c.Conn.SetReadDeadline(aLongTimeAgo)
		}
	}
}

// settle returns once no wakeIdleLanes is under way: one that took a lane
// has set its deadline by then.
func (t *tracker) settle() {
	t.mu.Lock()
	defer t.mu.Unlock()
}

// quietTunnels returns the open tunnels whose sockets have carried no data
// either way for at least d, by quiet (rawtcp.Quiet outside tests).
func (t *tracker) quietTunnels(d time.Duration, quiet func(net.Conn) (time.Duration, bool)) []*conn {
	t.mu.Lock()
	cs := make([]*conn, 0, len(t.conns))
	for c := range t.conns {
		if c.info.tunnel.Load() {
			cs = append(cs, c)
		}
	}
	t.mu.Unlock()
	out := cs[:0]
	for _, c := range cs {
		// Every byte a tunnel moves is read from or written to the
		// accepted socket, so its quiet time is the tunnel's.
		if q, ok := quiet(c.Conn); ok && q >= d {
			out = append(out, c)
		}
	}
	return out
}

// aLongTimeAgo is a deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// coalesced batches the writes of an HTTP/2 connection (see package
// coalesce). The result is a *conn again so that the server finds the
// connection's info.
func coalesced(c *conn, bufferReads bool) *conn {
	if bufferReads {
		c.keepBuf = true
		if c.br == nil {
			c.br = bufio.NewReaderSize(c.Conn, 4096)
		}
	}
	return &conn{Conn: coalesce.New(c), info: c.info, done: func(*conn) {}}
}
