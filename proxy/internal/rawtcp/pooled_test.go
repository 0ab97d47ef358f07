package rawtcp

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/proxy/internal/testnet"
)

// countingPool lends small buffers and tells, on puts, how many are out.
type countingPool struct {
	mu   sync.Mutex
	out  int
	gets int
	puts chan int // the count out after each Put
}

func newCountingPool() *countingPool { return &countingPool{puts: make(chan int, 64)} }

func (p *countingPool) Get() any {
	p.mu.Lock()
	p.out++
	p.gets++
	p.mu.Unlock()
	b := make([]byte, 8)
	return &b
}

func (p *countingPool) Put(any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out--
	p.puts <- p.out // under the lock: in the order of the counts
}

func (p *countingPool) state() (out, gets int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out, p.gets
}

type pooledRead struct {
	bp  *[]byte
	n   int
	err error
}

// TestPooledReaderWaitsEmptyHanded: a reader waiting for its peer holds no
// buffer; each read returns one holding the bytes, and the end of the
// stream returns none.
func TestPooledReaderWaitsEmptyHanded(t *testing.T) {
	for _, wrap := range []bool{false, true} {
		c, s := testnet.TCPPair(t)
		var src net.Conn = s
		if wrap {
			src = Wrap(s)
		}
		pool := newCountingPool()
		r, ok := NewPooledReader(src, pool)
		if !ok {
			t.Fatalf("NewPooledReader(%T) refused", src)
		}
		reads := make(chan pooledRead)
		go func() {
			for {
				bp, n, err := r.Read()
				reads <- pooledRead{bp, n, err}
				if err != nil {
					return
				}
			}
		}()
		// Nothing to read yet: the attempt gives its buffer back and waits.
		if out := <-pool.puts; out != 0 {
			t.Fatalf("%d buffers out after an empty attempt, want 0", out)
		}
		for _, msg := range []string{"hello", "proxy"} {
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			got := <-reads
			if got.err != nil || got.bp == nil || string((*got.bp)[:got.n]) != msg {
				t.Fatalf("Read = %v, %d, %v; want %q", got.bp, got.n, got.err, msg)
			}
			pool.Put(got.bp)
			<-pool.puts
			// The next attempt finds nothing and waits with empty hands.
			if out := <-pool.puts; out != 0 {
				t.Fatalf("%d buffers out while waiting, want 0", out)
			}
		}
		c.Close()
		got := <-reads
		if got.bp != nil || got.n != 0 || got.err != io.EOF {
			t.Fatalf("at the end Read = %v, %d, %v; want nil, 0, EOF", got.bp, got.n, got.err)
		}
		if out, gets := pool.state(); out != 0 || gets < 4 {
			t.Fatalf("%d out after %d gets, want 0", out, gets)
		}
	}
}

// TestPooledReaderErrors: a deadline and a closed connection come back as
// package net's errors, with no buffer.
func TestPooledReaderErrors(t *testing.T) {
	_, s := testnet.TCPPair(t)
	pool := newCountingPool()
	r, _ := NewPooledReader(s, pool)
	s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	bp, n, err := r.Read()
	var oe *net.OpError
	if bp != nil || n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("after the deadline Read = %v, %d, %v", bp, n, err)
	}
	s.Close()
	if bp, n, err := r.Read(); bp != nil || n != 0 || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("on a closed connection Read = %v, %d, %v", bp, n, err)
	}
	if out, _ := pool.state(); out != 0 {
		t.Fatalf("%d buffers out, want 0", out)
	}
	if _, ok := NewPooledReader(struct{ net.Conn }{s}, pool); ok {
		t.Fatal("NewPooledReader took a connection that is not TCP")
	}
}
