// Package bodycopy copies HTTP bodies through buffers sized by what flows.
//
// A relay that reads a response body into a 32 KiB buffer holds it while
// the read waits, and a streamed response (a gRPC stream, server-sent
// events, a watch) spends most of its life waiting for its next message:
// each open stream held 32 KiB for its whole life, in a proxy whose other
// per-stream costs are a few KiB. Copy waits with a small buffer after
// small reads and takes the large one for bulk.
//
// It must not hold bytes back: every read is written, and flushed when
// asked, before the next read, so that a stream's message is never delayed
// waiting for more.
package bodycopy

import (
	"io"
	"sync"
)

const (
	// SmallSize is the buffer a copy waits with: a typical message fits.
	SmallSize = 2 << 10
	// LargeSize is the buffer of bulk transfers: more bytes per read and
	// write, as io.Copy's own.
	LargeSize = 32 << 10
)

var (
	small = sync.Pool{New: func() any { b := make([]byte, SmallSize); return &b }}
	large = sync.Pool{New: func() any { b := make([]byte, LargeSize); return &b }}
)

// Copy copies src to dst until src ends (nil error) or a read or write
// fails (that error), calling flush, when not nil, after each write.
//
// Reads start with the small buffer. A read that fills it means more bytes
// were waiting, so the next reads take the large buffer, until one returns
// no more than the small buffer holds: the source has caught up with a
// small message, and the large buffer is given back before the next read,
// which may wait. A bulk transfer therefore keeps moving up to LargeSize
// per read (partial reads of a few KiB, as TCP segments or HTTP/2 frames
// arrive, do not send it back to the small buffer), and a stream of small
// messages waits holding SmallSize. After a large message a stream waits
// with the large buffer, as every copy did before.
func Copy(dst io.Writer, src io.Reader, flush func()) error {
	sp := small.Get().(*[]byte)
	defer small.Put(sp)
	var lp *[]byte
	defer func() {
		if lp != nil {
			large.Put(lp)
		}
	}()
	buf := *sp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
			if flush != nil {
				flush()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
		switch {
		case lp == nil && n == len(buf):
			lp = large.Get().(*[]byte)
			buf = *lp
		case lp != nil && n <= SmallSize:
			large.Put(lp)
			lp = nil
			buf = *sp
		}
	}
}
