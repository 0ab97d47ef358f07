package pipe

import (
	"net"
	"os"
	"sync"
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
// The pipe is the shared pool's (see pipes), held only while bytes are in
// it: a copy that finds its socket empty gives the pipe back before it
// waits.
//
// handled is false when splice cannot go on: the kernel refuses these
// sockets (before anything moved), or no pipe can be had (too many open
// files); the pipe is then empty and the caller copies the rest in user
// space, after the written bytes. A nil error means src ended (EOF).
func spliceCopy(dst, src *net.TCPConn) (written int64, handled bool, err error) {
	src0, err := src.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	dst0, err := dst.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	s := &splicer{}
	defer func() {
		if s.p != nil {
			pipes.put(s.p, s.inPipe == 0)
		}
	}()
	drain, pump := s.drain, s.pump
	for {
		if err := src0.Read(drain); err != nil {
			return written, true, rawtcp.OpError("read", src, err)
		}
		if s.noPipe {
			return written, false, nil
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
	p      *kpipe // nil while the copy waits for its socket
	noPipe bool   // no pipe could be had
	inPipe int    // bytes in the pipe, not yet sent on
	moved  int64  // bytes sent on during the last pump
	errno  syscall.Errno
}

// drain moves what the socket fd holds into the (empty) pipe; false when
// there is nothing yet, to wait for the socket to become readable, with the
// pipe given back.
func (s *splicer) drain(fd uintptr) bool {
	if s.p == nil {
		p, err := pipes.get()
		if err != nil {
			s.inPipe, s.noPipe = 0, true
			return true
		}
		s.p = p
	}
	for {
		n, _, e := syscall.RawSyscall6(unix.SYS_SPLICE, fd, 0, s.p.w, 0, maxSplice, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch e {
		case 0:
			s.inPipe, s.errno = int(n), 0
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			pipes.put(s.p, true)
			s.p = nil
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
		n, _, e := syscall.RawSyscall6(unix.SYS_SPLICE, s.p.r, 0, fd, 0, uintptr(s.inPipe), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
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

// kpipe is a non-blocking pipe of maxSplice bytes: its read and write ends.
type kpipe struct{ r, w uintptr }

// pipePool keeps empty pipes for the copies that have bytes to move. A pipe
// of 1 MiB costs the kernel about 16 KiB even when empty (its array of
// buffer slots, its inode and files), charged to the pod: one per direction
// of every open connection was about 39 KiB of kernel memory per idle
// connection. Copies take a pipe when their socket has bytes and give it
// back when it is empty again; at most maxFreePipes wait here, the rest
// are closed.
type pipePool struct {
	mu   sync.Mutex
	free []*kpipe
	held int // taken and not given back
}

// maxFreePipes bounds the empty pipes kept for reuse.
const maxFreePipes = 32

var pipes pipePool

func (pp *pipePool) get() (*kpipe, error) {
	pp.mu.Lock()
	pp.held++
	if n := len(pp.free); n > 0 {
		p := pp.free[n-1]
		pp.free = pp.free[:n-1]
		pp.mu.Unlock()
		return p, nil
	}
	pp.mu.Unlock()
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		pp.mu.Lock()
		pp.held--
		pp.mu.Unlock()
		return nil, err
	}
	// A smaller pipe works too, with more calls; errors are ignored.
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, maxSplice)
	return &kpipe{r: uintptr(fds[0]), w: uintptr(fds[1])}, nil
}

// put gives p back; a pipe that may still hold bytes is closed instead.
func (pp *pipePool) put(p *kpipe, empty bool) {
	pp.mu.Lock()
	pp.held--
	if empty && len(pp.free) < maxFreePipes {
		pp.free = append(pp.free, p)
		pp.mu.Unlock()
		return
	}
	pp.mu.Unlock()
	syscall.Close(int(p.r))
	syscall.Close(int(p.w))
}

// inUse is how many pipes copies hold.
func (pp *pipePool) inUse() int {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.held
}
