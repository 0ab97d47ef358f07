// Package rawtcp wraps a *net.TCPConn so that its reads and writes issue the
// read(2) and write(2) system calls directly (syscall.RawSyscall inside
// syscall.RawConn's callbacks) instead of through the runtime's blocking
// system call path.
//
// Why: a socket of the net package is non-blocking, so its reads and writes
// return at once (EAGAIN when they would block, and the goroutine then waits
// in the network poller as before). The runtime's path for a system call
// that may block (entersyscall) also wakes the runtime's monitor thread
// (sysmon) whenever that thread sleeps because every P was idle. A proxy at
// a moderate request rate goes idle between requests, so nearly every
// request woke sysmon, which then polled every 20 µs while the proxy worked:
// on one thread at 1000 requests a second, sysmon used about a sixth of the
// proxy's CPU. A raw system call does not touch the scheduler, which is
// correct for a call that cannot block.
//
// Everything else (Close, CloseWrite, deadlines, addresses, SyscallConn,
// ReadFrom and WriteTo, which use the ordinary path) is the *net.TCPConn's
// own. So is writev through net.Buffers: the wrapper inherits the method
// that net.Buffers.WriteTo looks for, which only the proxy's large writes
// (over 16 KiB) use. Deadlines and Close wake a waiting Read or Write as
// they do for the plain connection, since the waiting is the net package's.
package rawtcp

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxRW bounds one system call, as package net does (internal/poll).
const maxRW = 1 << 30

// Conn is a TCP connection whose Read and Write skip the runtime's system
// call bookkeeping. It is safe for concurrent use like a *net.TCPConn.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	// One read and one write at a time, as the connection's own locks
	// would allow; the fields carry a call's arguments and results into
	// the callbacks, made once so that a call allocates nothing.
	rmu     sync.Mutex
	rbuf    []byte
	rn      int
	rerr    syscall.Errno
	readFn  func(uintptr) bool
	wmu     sync.Mutex
	wbuf    []byte
	wn      int
	werr    syscall.Errno
	wstuck  bool
	writeFn func(uintptr) bool
}

// Wrap returns c as a *Conn when c is a *net.TCPConn whose socket is
// non-blocking (as package net makes every socket), else c unchanged: a raw
// system call on a blocking socket would stall its thread's goroutines.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	if !nonBlocking(rc) {
		return c
	}
	w := &Conn{TCPConn: tc, rc: rc}
	w.readFn, w.writeFn = w.doRead, w.doWrite
	return w
}

// nonBlocking says that rc's socket is non-blocking: a raw system call on a
// blocking socket would stall its thread's goroutines.
func nonBlocking(rc syscall.RawConn) bool {
	nonblocking := false
	if err := rc.Control(func(fd uintptr) {
		flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		nonblocking = err == nil && flags&unix.O_NONBLOCK != 0
	}); err != nil {
		return false
	}
	return nonblocking
}

// TCP returns the *net.TCPConn under c (c itself when it is one): for what
// needs the plain connection, such as SO_ORIGINAL_DST and splice(2).
func TCP(c net.Conn) (*net.TCPConn, bool) {
	switch t := c.(type) {
	case *Conn:
		return t.TCPConn, true
	case *net.TCPConn:
		return t, true
	}
	return nil, false
}

// Plain returns the *net.TCPConn under c when c is a *Conn, else c: package
// pipe splices (splice(2)) between two plain TCP connections.
func Plain(c net.Conn) net.Conn {
	if t, ok := c.(*Conn); ok {
		return t.TCPConn
	}
	return c
}

// Read reads like (*net.TCPConn).Read.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		// Still an error on a closed connection, as package net's.
		if err := c.rc.Read(done); err != nil {
			return 0, c.opError("read", err)
		}
		return 0, nil
	}
	if len(p) > maxRW {
		p = p[:maxRW]
	}
	c.rmu.Lock()
	c.rbuf, c.rn, c.rerr = p, 0, 0
	err := c.rc.Read(c.readFn)
	n, errno := c.rn, c.rerr
	c.rbuf = nil
	c.rmu.Unlock()
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *Conn) doRead(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch e {
		case 0:
			c.rn = int(n)
			raceRead(c.rbuf, c.rn)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait in the poller, then again
		}
		c.rerr = e
		return true
	}
}

// Write writes like (*net.TCPConn).Write: all of p, or an error.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	c.wbuf, c.wn, c.werr, c.wstuck = p, 0, 0, false
	var err error
	if len(p) > 0 {
		err = c.rc.Write(c.writeFn)
	} else {
		err = c.rc.Write(done) // an error on a closed connection
	}
	n, errno, stuck := c.wn, c.werr, c.wstuck
	c.wbuf = nil
	c.wmu.Unlock()
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("write", errno))
	case stuck:
		return n, c.opError("write", io.ErrUnexpectedEOF)
	}
	return n, nil
}

func (c *Conn) doWrite(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		b := c.wbuf[c.wn:]
		if len(b) > maxRW {
			b = b[:maxRW]
		}
		raceWrite(b)
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch e {
		case 0:
			if n == 0 { // no progress and no error: as package net
				c.wstuck = true
				return true
			}
			c.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // wait until writable, then go on
		default:
			c.werr = e
			return true
		}
	}
	return true
}

// done is a callback that does nothing: for the connection's state alone.
func done(uintptr) bool { return true }

func (c *Conn) opError(op string, err error) error { return OpError(op, c, err) }

// OpError wraps err as package net does for op ("read" or "write") on the
// TCP connection c. The connection's closing and deadlines come back from
// syscall.RawConn as an OpError of its own ("raw-read"), whose cause is kept.
func OpError(op string, c net.Conn, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// PeekIdle reports, without blocking or taking anything from the socket,
// whether an idle connection's socket holds nothing to read (EAGAIN): no
// data and no end of stream. For use inside syscall.RawConn.Read; the
// system call is raw for the reason of the package comment.
func PeekIdle(fd uintptr, scratch []byte) bool {
	_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&scratch[0])), uintptr(len(scratch)),
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return e == syscall.EAGAIN
}

// Quiet reports how long c's TCP socket has neither sent nor received data,
// as the kernel keeps it (TCP_INFO's last_data_sent and last_data_recv, in
// milliseconds): no cost on the data path, and acknowledgements and
// keep-alive probes do not count as data. ok is false when c is not a TCP
// connection or the kernel refuses.
func Quiet(c net.Conn) (d time.Duration, ok bool) {
	tc, isTCP := TCP(c)
	if !isTCP {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || gerr != nil {
		return 0, false
	}
	ms := min(info.Last_data_sent, info.Last_data_recv)
	return time.Duration(ms) * time.Millisecond, true
}
