package pipe

import (
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/proxy/internal/rawtcp"
)

// maxSplice is what one splice(2) asks to move, and the pipe's size: as
// package net's own splice, 1 MiB (the default /proc/sys/fs/pipe-max-size).
const maxSplice = 1 << 20

// spliceCopy moves src's bytes to dst through a pipe, inside the kernel, as
// io.Copy between two *net.TCPConn does, but issuing splice(2) as a raw
// system call inside syscall.RawConn's callbacks: the runtime's path for a
// system call that may block wakes its monitor thread whenever the proxy
// was idle, which cost about a fifth of a TCP proxy's CPU at 1000 messages
// a second (see package rawtcp). The sockets are non-blocking and the pipe
// is too, so no call blocks; on EAGAIN the copy waits in the network poller,
// where Close and deadlines reach it as they reach any read or write.
//
// handled is false when nothing was moved and splice cannot be used (no
// pipe, or the kernel refuses these sockets); the caller then copies in user
// space. A nil error means src ended (EOF).
func spliceCopy(dst, src *net.TCPConn) (written int64, handled bool, err error) {
	src0, err := src.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	dst0, err := dst.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return 0, false, nil
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	// A smaller pipe works too, with more calls; errors are ignored.
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, maxSplice)

	s := &splicer{rfd: uintptr(fds[0]), wfd: uintptr(fds[1])}
	drain, pump := s.drain, s.pump
	for {
		if err := src0.Read(drain); err != nil {
			return written, true, rawtcp.OpError("read", src, err)
		}
		if s.errno != 0 {
			if s.errno == syscall.EINVAL && written == 0 {
				return 0, false, nil
			}
			return written, true, rawtcp.OpError("read", src, os.NewSyscallError("splice", s.errno))
		}
		if s.inPipe == 0 {
			return written, true, nil // EOF
		}
		err := dst0.Write(pump)
		written += s.moved
		s.moved = 0
		if err != nil {
			return written, true, rawtcp.OpError("write", dst, err)
		}
		if s.errno != 0 {
			return written, true, rawtcp.OpError("write", dst, os.NewSyscallError("splice", s.errno))
		}
	}
}

// splicer carries one direction's state into the callbacks.
type splicer struct {
	rfd, wfd uintptr
	inPipe   int   // bytes in the pipe, not yet sent on
	moved    int64 // bytes sent on during the last pump
	errno    syscall.Errno
}

// drain moves what the socket fd holds into the (empty) pipe; false when
// there is nothing yet, to wait for the socket to become readable.
func (s *splicer) drain(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall6(unix.SYS_SPLICE, fd, 0, s.wfd, 0, maxSplice, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch e {
		case 0:
			s.inPipe, s.errno = int(n), 0
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		s.inPipe, s.errno = 0, e
		return true
	}
}

// pump moves the pipe's bytes to the socket fd; false when the socket is
// full, to wait for it to become writable.
func (s *splicer) pump(fd uintptr) bool {
	s.errno = 0
	for s.inPipe > 0 {
		n, _, e := syscall.RawSyscall6(unix.SYS_SPLICE, s.rfd, 0, fd, 0, uintptr(s.inPipe), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case e == 0 && n > 0:
			s.inPipe -= int(n)
			s.moved += int64(n)
		case e == syscall.EINTR:
		case e == syscall.EAGAIN:
			return false
		case e == 0: // nothing moved from a pipe that holds bytes
			s.errno = syscall.EIO
			return true
		default:
			s.errno = e
			return true
		}
	}
	return true
}
