package route

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

// Retry rule, decided here and documented in the package comment:
//
//   - Only rules with a Retry are retried, at most Retry.Attempts times
//     (0 means 1), while the request timeout allows and the budget has a token.
//     The one exception: without a Retry, a replayable request that provably
//     never reached the backend (refused connection, ErrNotSent) is retried
//     on another pick up to unsentRetries times, under the same budget.
//   - The request body must be replayable: no body, or one that fit the replay
//     buffer. A larger body was streamed to the first attempt and is gone.
//   - An idempotent method (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT,
//     DELETE) is retried on a connection failure, on a backend request
//     timeout when 504 is in Retry.Codes, and on a status in Retry.Codes.
//   - Any other method (POST, PATCH, ...) is retried only when the request
//     provably never reached the backend: the connection could not be
//     established (a dial error, e.g. connection refused) or the transport
//     says so with ErrNotSent. A POST answered 503 is not retried: the
//     backend may have acted on it.

// HeaderNotSent on a response from a peer proxy says that the peer could not
// hand the request to its application (the connection to it was refused: a
// pod shutting down): the request reached no application, so the caller's
// proxy may retry it elsewhere exactly as if the connection to the peer had
// been refused. It never reaches an application: the caller's proxy removes
// it.
const HeaderNotSent = "Weft-Not-Sent"

// ErrNotSent may be wrapped by a transport's error to say that no byte of the
// request reached the backend, which makes even a POST safe to retry. Dial
// errors (*net.OpError with Op "dial") are recognised without it.
var ErrNotSent = errors.New("request not sent")

// unsentRetries is how often a request that never reached a backend is
// retried when its rule has no retry policy.
const unsentRetries = 2

type retryPolicy struct {
	codes    [10]uint64 // bitset of status codes 0-639
	attempts int
	backoff  time.Duration
}

func compileRetry(r *meshconfig.Retry, defBackoff time.Duration) *retryPolicy {
	if r == nil {
		return nil
	}
	p := &retryPolicy{attempts: r.Attempts, backoff: r.Backoff.D()}
	if p.attempts <= 0 {
		p.attempts = 1
	}
	if p.backoff <= 0 {
		p.backoff = defBackoff
	}
	for _, c := range r.Codes {
		if c >= 0 && c < 640 {
			p.codes[c/64] |= 1 << (c % 64)
		}
	}
	return p
}

func (p *retryPolicy) retriesStatus(code int) bool {
	return code >= 0 && code < 640 && p.codes[code/64]&(1<<(code%64)) != 0
}

// delay before retry n (1-based): exponential from the base, capped at ten
// times the base, with jitter in [d/2, d] so that clients that failed
// together do not retry together.
func (p *retryPolicy) delay(n int) time.Duration {
	d := p.backoff
	for i := 1; i < n && d < 10*p.backoff; i++ {
		d *= 2
	}
	d = min(d, 10*p.backoff)
	return d/2 + rand.N(d/2+1)
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// notSent reports whether err proves the request never reached the backend.
func notSent(err error) bool {
	if errors.Is(err, ErrNotSent) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// RetryBudget caps retries at a ratio of requests: every request deposits
// Ratio of a token, every retry withdraws one, and at most Burst tokens are
// banked. Over any stretch of traffic, retries ≤ Ratio × requests + Burst,
// so a failing backend sees at most (1+Ratio)× its normal load plus a burst.
// It is safe for concurrent use and can outlive tables.
type RetryBudget struct {
	perRequest int64 // milli-tokens deposited per request
	max        int64 // milli-tokens
	balance    atomic.Int64
}

// NewRetryBudget returns a full budget. Zero values select the defaults:
// ratio 0.2 and burst 10.
func NewRetryBudget(ratio float64, burst int) *RetryBudget {
	if ratio <= 0 {
		ratio = 0.2
	}
	if burst <= 0 {
		burst = 10
	}
	b := &RetryBudget{perRequest: int64(ratio * 1000), max: int64(burst) * 1000}
	b.balance.Store(b.max)
	return b
}

func (b *RetryBudget) deposit() {
	for {
		v := b.balance.Load()
		n := min(v+b.perRequest, b.max)
		if n == v || b.balance.CompareAndSwap(v, n) {
			return
		}
	}
}

func (b *RetryBudget) withdraw() bool {
	for {
		v := b.balance.Load()
		if v < 1000 {
			return false
		}
		if b.balance.CompareAndSwap(v, v-1000) {
			return true
		}
	}
}

// sleep waits d or until ctx ends; false if ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
