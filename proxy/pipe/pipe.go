// Package pipe copies bytes between two connections for opaque TCP: each
// direction runs on its own and, at its end of stream, half-closes the other
// side's write direction, so protocols that shut down one way (e.g. a client
// that sends a request then CloseWrite) keep working through the proxy.
//
// It must not wrap *net.TCPConn: between two of them it uses splice(2),
// keeping bytes in the kernel (spliceCopy).
package pipe

import (
	"errors"
	"io"
	"net"
	"sync"
)

type closeWriter interface{ CloseWrite() error }

// Result is what one Pipe moved.
type Result struct {
	// AToB counts bytes read from a and written to b (including the prefix).
	AToB, BToA int64
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Pipe writes prefix (bytes already read from a) to b, then copies both ways
// until both directions end, and closes both connections. An error in one
// direction (not a clean EOF) aborts both.
func Pipe(a, b net.Conn, prefix []byte) Result {
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
		n, err := copyHalf(b, a)
		r.AToB += n
		finish(b, a, err)
	}()
	n, err := copyHalf(a, b)
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

func copyHalf(dst, src net.Conn) (int64, error) {
	dt, dok := dst.(*net.TCPConn)
	st, sok := src.(*net.TCPConn)
	if dok && sok {
		if n, handled, err := spliceCopy(dt, st); handled {
			return n, err
		}
		return io.Copy(dst, src) // package net's splice, or a user-space copy
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	// Hide ReaderFrom/WriterTo so that our pooled buffer is used instead of
	// a fresh 32 KiB one per connection.
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
}
