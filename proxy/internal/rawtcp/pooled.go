package rawtcp

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// PooledReader reads a TCP connection into buffers taken from a pool only
// while there is something to read: a read that finds the socket empty gives
// its buffer back before it waits for the socket to become readable. An
// opaque TCP connection spends most of its life waiting for its peer (a
// database client's pool, a message broker's consumers), and a copy loop
// that waits with its buffer in hand holds it, 32 KiB per direction, for all
// that time. Waiting costs no system call more than a plain Read: the read
// that finds nothing is the one package net makes before it waits too.
type PooledReader struct {
	c     net.Conn
	rc    syscall.RawConn
	pool  Pool
	bp    *[]byte // the buffer of the attempt under way
	n     int
	errno syscall.Errno
	fn    func(uintptr) bool
}

// Pool lends buffers, as a *sync.Pool does: Get returns a *[]byte that is
// not empty.
type Pool interface {
	Get() any
	Put(any)
}

// NewPooledReader returns a reader of c, which must be a *net.TCPConn or a
// *Conn with a non-blocking socket (as package net makes them); false
// otherwise.
func NewPooledReader(c net.Conn, pool Pool) (*PooledReader, bool) {
	tc, ok := TCP(c)
	if !ok {
		return nil, false
	}
	rc, err := tc.SyscallConn()
	if err != nil || !nonBlocking(rc) {
		return nil, false
	}
	r := &PooledReader{c: tc, rc: rc, pool: pool}
	r.fn = r.read
	return r, true
}

// Read reads once, like (*net.TCPConn).Read into a buffer of the pool. It
// returns that buffer, holding the n bytes read, for the caller to put back;
// nil when n is 0. At the end of the stream it returns io.EOF.
func (r *PooledReader) Read() (bp *[]byte, n int, err error) {
	r.n, r.errno = 0, 0
	err = r.rc.Read(r.fn)
	bp, n, errno := r.bp, r.n, r.errno
	r.bp = nil
	switch {
	case err != nil:
		err = OpError("read", r.c, err)
	case errno != 0:
		err = OpError("read", r.c, os.NewSyscallError("read", errno))
	case n == 0:
		err = io.EOF
	}
	if n == 0 && bp != nil {
		r.pool.Put(bp)
		bp = nil
	}
	return bp, n, err
}

func (r *PooledReader) read(fd uintptr) bool {
	if r.bp == nil {
		r.bp = r.pool.Get().(*[]byte)
	}
	b := *r.bp
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(min(len(b), maxRW)))
		switch e {
		case 0:
			r.n = int(n)
			raceRead(b, r.n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			// Wait with empty hands. The poller's readiness was reset
			// before this attempt, so nothing that arrives now is missed.
			r.pool.Put(r.bp)
			r.bp = nil
			return false
		}
		r.errno = e
		return true
	}
}
