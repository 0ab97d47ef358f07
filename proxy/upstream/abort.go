package upstream

import (
	"context"
	"sync"
)

// An AbortSlot cuts short the upstream I/O of a request when the request's
// context is canceled, for a server that serves a connection's requests one
// at a time and cancels their contexts itself, so that it knows when (the
// sidecar's HTTP/1.1 lane). The pool's HTTP/1.1 client holds the connection
// a request is on in the slot, found in the request's context
// (WithAbortSlot), instead of watching the context with context.AfterFunc:
// that cost five allocations per request, and 1.6% of the proxy's CPU for
// HTTP/1.1 under AfterFunc alone, though the context is nearly never
// canceled before the response has been read.
//
// The server calls Start with each request's context's Done channel before
// the request is handled, and End after that context is canceled.
type AbortSlot struct {
	mu   sync.Mutex
	done <-chan struct{} // of the request served; nil between requests
	held *h1Conn
}

// Start serves the request whose context's Done channel is done.
func (s *AbortSlot) Start(done <-chan struct{}) {
	s.mu.Lock()
	s.done, s.held = done, nil
	s.mu.Unlock()
}

// End follows the cancellation of the request's context: the connection
// held, if any, gets a deadline in the past, which fails its reads and
// writes in progress and to come, and no other is held for the request.
func (s *AbortSlot) End() {
	s.mu.Lock()
	c := s.held
	s.done, s.held = nil, nil
	s.mu.Unlock()
	if c != nil {
		c.nc.SetDeadline(aLongTimeAgo)
	}
}

// hold puts c in the slot until release or End. It returns false when it
// cannot, and the caller watches the context itself: done is not the
// channel of the request served now (a context with a cancellation of its
// own, such as a timeout, lies between, or the request has ended), or the
// slot holds a connection already.
func (s *AbortSlot) hold(done <-chan struct{}, c *h1Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if done != s.done || s.held != nil {
		return false
	}
	s.held = c
	return true
}

// release takes c out of the slot. It returns false if End took it first:
// its deadline is set, and it must not be reused.
func (s *AbortSlot) release(c *h1Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held != c {
		return false
	}
	s.held = nil
	return true
}

type abortSlotKey struct{}

// WithAbortSlot returns a child of parent that carries s.
func WithAbortSlot(parent context.Context, s *AbortSlot) context.Context {
	return context.WithValue(parent, abortSlotKey{}, s)
}

func abortSlotFrom(ctx context.Context) *AbortSlot {
	s, _ := ctx.Value(abortSlotKey{}).(*AbortSlot)
	return s
}
