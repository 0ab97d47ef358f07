// Package balance owns per-endpoint load-balancing state for weft-proxy:
// latency EWMA, in-flight counts, per-endpoint request limits and passive
// failure accrual (consecutive failures eject an endpoint for a backoff that
// grows with every ejection, after which one probe request decides whether it
// comes back). It also implements the power-of-two-choices pick over that
// state.
//
// State lives in a Store keyed by endpoint address, not in a compiled route
// table, so that a new snapshot (a weight change, an added endpoint) keeps
// what the proxy has learnt about the endpoints that still exist. The hot path
// (Pick, Done) takes no lock and allocates nothing; only Store.Endpoint, called
// when a snapshot is compiled, locks.
//
// It must not know about HTTP, routes or metrics: callers report an outcome
// (failed or not, and how long it took) and read the state back.
package balance

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Config tunes a Store. The zero value gives the defaults below.
type Config struct {
	// ConsecutiveFailures ejects an endpoint after this many failures in a
	// row. Default 5; negative disables failure accrual.
	ConsecutiveFailures int
	// BaseEjection is the first ejection's length; each further ejection
	// without a recovery in between doubles it. Default 5s.
	BaseEjection time.Duration
	// MaxEjection caps the ejection length. Default 2m.
	MaxEjection time.Duration
	// MaxRequests bounds the requests in flight to one endpoint; an endpoint
	// at its limit is not picked. 0 means unlimited. For HTTP/1.1 this also
	// bounds the connections in use to the endpoint.
	MaxRequests int
	// Now is the clock, for tests. Default time.Now.
	Now func() time.Time
}

// Store holds the state of every endpoint that the compiled tables use.
type Store struct {
	cfg       Config
	threshold int32
	mu        sync.Mutex
	eps       map[string]*Endpoint
}

// NewStore returns an empty store.
func NewStore(cfg Config) *Store {
	if cfg.ConsecutiveFailures == 0 {
		cfg.ConsecutiveFailures = 5
	}
	if cfg.BaseEjection <= 0 {
		cfg.BaseEjection = 5 * time.Second
	}
	if cfg.MaxEjection <= 0 {
		cfg.MaxEjection = 2 * time.Minute
	}
	if cfg.MaxEjection < cfg.BaseEjection {
		cfg.MaxEjection = cfg.BaseEjection
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	th := int32(math.MaxInt32)
	if cfg.ConsecutiveFailures > 0 {
		th = int32(min(cfg.ConsecutiveFailures, math.MaxInt32))
	}
	return &Store{cfg: cfg, threshold: th, eps: make(map[string]*Endpoint)}
}

// Endpoint returns the state of addr, creating it on first use. Call it when
// compiling a snapshot, not per request.
func (s *Store) Endpoint(addr string) *Endpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.eps[addr]
	if !ok {
		e = &Endpoint{addr: addr, store: s}
		s.eps[addr] = e
	}
	return e
}

// Retain forgets the endpoints for which keep returns false, so that the
// store does not grow forever as pods come and go. Call it after a new
// snapshot is compiled, with the snapshot's endpoint set. A table compiled
// earlier still holds its *Endpoint and keeps working with it.
func (s *Store) Retain(keep func(addr string) bool) (removed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for a := range s.eps {
		if !keep(a) {
			delete(s.eps, a)
			removed++
		}
	}
	return removed
}

// Len is the number of endpoints held.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.eps)
}

// Endpoint is the shared state of one address. All fields are atomics: many
// requests update it at once.
type Endpoint struct {
	addr  string
	store *Store

	ewma      atomic.Uint64 // float64 bits, nanoseconds; 0 = no sample yet
	sampledAt atomic.Int64  // UnixNano of the last sample
	inflight  atomic.Int64
	failures  atomic.Int32 // consecutive
	successes atomic.Int32 // consecutive, to forget past ejections
	ejections atomic.Int32 // since the last sustained recovery
	// ejectedUntil is a UnixNano time; 0 when the endpoint is in service. Once
	// it has passed the endpoint is half-open: one probe at a time.
	ejectedUntil atomic.Int64
	probing      atomic.Bool
}

// Addr is the endpoint's "ip:port".
func (e *Endpoint) Addr() string { return e.addr }

// InFlight is the number of requests picked and not yet Done.
func (e *Endpoint) InFlight() int64 { return e.inflight.Load() }

// Latency is the current EWMA of response latency (0 before any sample).
func (e *Endpoint) Latency() time.Duration {
	return time.Duration(math.Float64frombits(e.ewma.Load()))
}

// Ejected reports whether failure accrual currently keeps the endpoint out of
// service (its ejection has not yet elapsed).
func (e *Endpoint) Ejected() bool {
	u := e.ejectedUntil.Load()
	return u != 0 && e.store.cfg.Now().UnixNano() < u
}

// Ejections is how many times the endpoint was ejected since it last
// recovered for good; the next ejection lasts BaseEjection<<Ejections.
func (e *Endpoint) Ejections() int { return int(e.ejections.Load()) }

// defaultLatency scores an endpoint without samples: low enough that a new
// endpoint gets traffic at once, high enough that it does not take it all.
const defaultLatency = float64(time.Millisecond)

// ewmaWeight is the weight of a new sample; 0.3 forgets an old latency in a
// few requests, which matters more to a sidecar than smoothing does.
const ewmaWeight = 0.3

// decayTime is how fast an unused endpoint's latency estimate fades (as in
// Finagle's and Linkerd's peak EWMA): without it, at light load the slightly
// faster endpoint would take every request forever and the other's estimate
// would never be refreshed.
const decayTime = float64(10 * time.Second)

// score is lower for better endpoints: expected latency times queue length,
// which makes a slow endpoint and a busy endpoint equally unattractive.
func (e *Endpoint) score(now int64) float64 {
	l := math.Float64frombits(e.ewma.Load())
	if l == 0 {
		l = defaultLatency
	} else if idle := now - e.sampledAt.Load(); idle > 0 {
		l *= math.Exp(-float64(idle) / decayTime)
	}
	return l * float64(e.inflight.Load()+1)
}

// state of an endpoint for picking.
type state uint8

const (
	stateReady state = iota
	stateProbe       // ejection elapsed: admit one probe
	stateEjected
)

func (e *Endpoint) state(now int64) state {
	u := e.ejectedUntil.Load()
	switch {
	case u == 0:
		return stateReady
	case now < u:
		return stateEjected
	default:
		return stateProbe
	}
}

// acquire reserves the endpoint for one request. It fails when the endpoint
// is at its request limit, or is half-open with a probe already running.
func (e *Endpoint) acquire(st state, probe *bool) bool {
	if st == stateProbe {
		if !e.probing.CompareAndSwap(false, true) {
			return false
		}
		*probe = true
	}
	n := e.inflight.Add(1)
	if lim := e.store.cfg.MaxRequests; lim > 0 && n > int64(lim) {
		e.inflight.Add(-1)
		if *probe {
			e.probing.Store(false)
			*probe = false
		}
		return false
	}
	return true
}

// Lease is one acquired endpoint; Done must be called exactly once.
type Lease struct {
	ep    *Endpoint
	probe bool
}

// Endpoint is the leased endpoint, nil if Pick found none.
func (l Lease) Endpoint() *Endpoint { return l.ep }

// Done returns the endpoint and records the outcome of the request: its
// latency (to the response headers, or to the failure) and whether it failed
// (a connection error, a timeout, or a 5xx answer, as the caller decides).
func (l Lease) Done(latency time.Duration, failed bool) {
	e := l.ep
	if e == nil {
		return
	}
	e.inflight.Add(-1)
	// Failures count with their real latency: a fast-failing endpoint then
	// looks attractive and draws the few requests that reach the ejection
	// threshold quickly, instead of lingering half-used and never ejected.
	now := e.store.cfg.Now().UnixNano()
	if l.probe && !failed {
		// A recovered endpoint starts afresh: its pre-ejection latency must
		// not keep it from being picked by a lower score.
		e.ewma.Store(math.Float64bits(float64(latency)))
	} else {
		e.observe(float64(latency))
	}
	e.sampledAt.Store(now)
	if failed {
		e.fail(now, l.probe)
	} else {
		e.succeed(l.probe)
	}
	if l.probe {
		e.probing.Store(false)
	}
}

func (e *Endpoint) observe(sample float64) {
	for {
		oldBits := e.ewma.Load()
		old := math.Float64frombits(oldBits)
		next := sample
		if old != 0 {
			next = old + ewmaWeight*(sample-old)
		}
		if e.ewma.CompareAndSwap(oldBits, math.Float64bits(next)) {
			return
		}
	}
}

func (e *Endpoint) fail(now int64, probe bool) {
	e.successes.Store(0)
	n := e.failures.Add(1)
	// A failed probe ejects again at once; otherwise wait for the threshold.
	// Only the request that crosses the threshold ejects, so concurrent
	// failures count one ejection.
	if probe || n == e.store.threshold {
		k := e.ejections.Add(1)
		d := e.store.cfg.BaseEjection
		for i := int32(1); i < k && d < e.store.cfg.MaxEjection; i++ {
			d *= 2
		}
		d = min(d, e.store.cfg.MaxEjection)
		e.ejectedUntil.Store(now + int64(d))
	}
}

// recoverAfter consecutive successes forget the endpoint's past ejections, so
// that an endpoint which failed once long ago starts again at BaseEjection.
const recoverAfter = 100

func (e *Endpoint) succeed(probe bool) {
	e.failures.Store(0)
	if probe {
		e.ejectedUntil.Store(0)
	}
	if e.successes.Add(1) >= recoverAfter && e.ejectedUntil.Load() == 0 {
		e.ejections.Store(0)
	}
}

// Pick chooses an endpoint by power of two choices: two distinct random
// endpoints in service, the one with the lower score wins. Half-open
// endpoints take one probe at a time. When every endpoint is ejected the
// pick ignores ejection (fail open: a possibly bad endpoint beats a certain
// error); when every endpoint is at its request limit it returns a Lease with
// a nil Endpoint. It allocates nothing.
func Pick(eps []*Endpoint) Lease { return pick(eps, -1) }

// PickExcept is Pick among the endpoints other than except (the one a
// request just failed on, for its retry); with no other endpoint it is Pick.
func PickExcept(eps []*Endpoint, except *Endpoint) Lease {
	if len(eps) > 1 {
		for i, e := range eps {
			if e == except {
				return pick(eps, i)
			}
		}
	}
	return Pick(eps)
}

// pick is Pick over eps without index skip (-1: none).
func pick(all []*Endpoint, skip int) Lease {
	n := len(all)
	if skip >= 0 {
		n--
	}
	if n <= 0 {
		return Lease{}
	}
	// at maps 0..n-1 onto all, around skip.
	at := func(k int) *Endpoint {
		if skip >= 0 && k >= skip {
			return all[k+1]
		}
		return all[k]
	}
	now := all[0].store.cfg.Now().UnixNano()
	if n > 1 {
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		a, b := at(i), at(j)
		sa, sb := a.state(now), b.state(now)
		if sa == stateReady && sb == stateReady {
			if b.score(now) < a.score(now) {
				a, b = b, a
			}
			if l, ok := try(a, stateReady); ok {
				return l
			}
			if l, ok := try(b, stateReady); ok {
				return l
			}
		}
	}
	// Slow path: a sampled endpoint was ejected, half-open or full. Scan from
	// a random start, preferring a pending probe, then any ready endpoint.
	start := rand.IntN(n)
	var best *Endpoint
	bestScore := math.Inf(1)
	for k := range n {
		e := at((start + k) % n)
		switch e.state(now) {
		case stateProbe:
			if l, ok := try(e, stateProbe); ok {
				return l
			}
		case stateReady:
			if s := e.score(now); s < bestScore {
				best, bestScore = e, s
			}
		}
	}
	if best != nil {
		if l, ok := try(best, stateReady); ok {
			return l
		}
		for k := range n {
			if e := at((start + k) % n); e.state(now) == stateReady {
				if l, ok := try(e, stateReady); ok {
					return l
				}
			}
		}
		return Lease{} // every endpoint in service is at its limit
	}
	// Every endpoint is ejected (or half-open with its probe running): fail
	// open rather than answer an error that is certain.
	for k := range n {
		if l, ok := try(at((start+k)%n), stateReady); ok {
			return l
		}
	}
	return Lease{}
}

func try(e *Endpoint, st state) (Lease, bool) {
	var probe bool
	if !e.acquire(st, &probe) {
		return Lease{}, false
	}
	return Lease{ep: e, probe: probe}, true
}
