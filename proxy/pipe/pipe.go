// Package pipe copies bytes between two connections for opaque TCP: each
// direction runs on its own and, at its end of stream, half-closes the other
// side's write direction, so protocols that shut down one way (e.g. a client
// that sends a request then CloseWrite) keep working through the proxy.
//
// It must not wrap *net.TCPConn: between two of them it uses splice(2),
// keeping bytes in the kernel (spliceCopy).
package pipe

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/weftmesh/weft/proxy/internal/rawtcp"
)

type closeWriter interface{ CloseWrite() error }

// Result is what one Pipe moved.
type Result struct {
	// AToB counts bytes read from a and written to b (including the prefix).
	AToB, BToA int64
}

// bufPool lends the copies in user space their buffers.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Pipe writes prefix (bytes already read from a) to b, then copies both ways
// until both directions end, and closes both connections. An error in one
// direction (not a clean EOF) aborts both. A direction that waits for its
// peer holds no buffer or pipe when it reads a TCP connection (plain, or
// under crypto/tls); other connections are copied through a pooled buffer
// held for the copy's life. Pipe uses the read deadline of a *tls.Conn for
// its own ends: the caller sets none.
func Pipe(a, b net.Conn, prefix []byte) Result {
	return pipe(a, b, prefix, &bufPool)
}

// Go runs Pipe on goroutines of its own and then calls done with its
// result. The caller's goroutine, whose stack grew for what came before (a
// TLS handshake, protocol detection), can end: an open connection then
// costs the stacks of its two copies only, which need little.
func Go(a, b net.Conn, prefix []byte, done func(Result)) {
	go func() { done(Pipe(a, b, prefix)) }()
}

// pipe is Pipe with the buffers' pool: a pool that counts what is out, in
// tests.
func pipe(a, b net.Conn, prefix []byte, bufs rawtcp.Pool) Result {
	var r Result
	if len(prefix) > 0 {
		n, err := b.Write(prefix)
		r.AToB += int64(n)
		if err != nil {
			a.Close()
			b.Close()
			return r
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, err := copyHalf(b, a, bufs)
		r.AToB += n
		finish(b, a, err)
	}()
	n, err := copyHalf(a, b, bufs)
	r.BToA = n
	finish(a, b, err)
	wg.Wait()
	a.Close()
	b.Close()
	return r
}

// finish ends dst's write side after a clean EOF from src, or tears both down
// after an error so that the other direction does not wait forever.
func finish(dst, src net.Conn, err error) {
	if err == nil || errors.Is(err, io.EOF) {
		if cw, ok := dst.(closeWriter); ok && cw.CloseWrite() == nil {
			return
		}
	}
	dst.Close()
	src.Close()
}

func copyHalf(dst, src net.Conn, bufs rawtcp.Pool) (int64, error) {
	var spliced int64
	dt, dok := dst.(*net.TCPConn)
	st, sok := src.(*net.TCPConn)
	if dok && sok {
		n, handled, err := spliceCopy(dt, st)
		if handled {
			return n, err
		}
		spliced = n // the rest in user space
	}
	n, err := copyUser(dst, src, bufs)
	return spliced + n, err
}

// copyUser copies through buffers in user space.
func copyUser(dst, src net.Conn, bufs rawtcp.Pool) (int64, error) {
	if r, ok := rawtcp.NewPooledReader(src, bufs); ok {
		return copyPooled(dst, r, bufs)
	}
	if tc, ok := src.(*tls.Conn); ok {
		return copyTLS(dst, tc, bufs)
	}
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	// Hide ReaderFrom/WriterTo so that our pooled buffer is used instead of
	// a fresh 32 KiB one per connection.
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
}

// copyPooled copies from a TCP socket holding a buffer only while bytes
// pass (see rawtcp.PooledReader), so that an idle connection holds none.
func copyPooled(dst io.Writer, r *rawtcp.PooledReader, bufs rawtcp.Pool) (int64, error) {
	var written int64
	for {
		bp, n, err := r.Read()
		if n > 0 {
			m, werr := send(dst, bp, n, bufs)
			written += m
			if werr != nil {
				return written, werr
			}
		}
		if err != nil {
			return written, err
		}
	}
}

// copyTLS copies from a TLS connection holding a buffer only while bytes
// pass. It waits for the next record with a one-byte read, which crypto/tls
// serves from the record it decrypts into a buffer of its own, then takes a
// buffer for the rest of that record and for the records crypto/tls has
// already received whole, read with a deadline in the past: those reads
// never touch the socket (a passed deadline fails a read before its system
// call), and crypto/tls treats the deadline's error as temporary, keeping
// a partial record for later. Then it clears the deadline: Pipe owns the
// read deadlines of its TLS connections.
func copyTLS(dst io.Writer, src *tls.Conn, bufs rawtcp.Pool) (int64, error) {
	var written int64
	var first [1]byte
	for {
		n, err := src.Read(first[:])
		if n == 0 {
			if err == nil {
				continue
			}
			return written, err
		}
		bp := bufs.Get().(*[]byte)
		buf := *bp
		buf[0] = first[0]
		if err == nil && src.SetReadDeadline(aLongTimeAgo) == nil {
			for n < len(buf) {
				m, rerr := src.Read(buf[n:])
				n += m
				if rerr != nil {
					if !errors.Is(rerr, os.ErrDeadlineExceeded) {
						err = rerr
					}
					break
				}
			}
			src.SetReadDeadline(time.Time{})
		}
		m, werr := send(dst, bp, n, bufs)
		written += m
		if werr != nil {
			return written, werr
		}
		if err != nil {
			return written, err
		}
	}
}

// send writes the first n bytes of the lent buffer bp to dst and gives the
// buffer back.
func send(dst io.Writer, bp *[]byte, n int, bufs rawtcp.Pool) (int64, error) {
	m, err := dst.Write((*bp)[:n])
	bufs.Put(bp)
	return int64(m), err
}

// aLongTimeAgo is a deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)
