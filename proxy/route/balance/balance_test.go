package balance

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeClock is advanced by hand so that ejection tests need no sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newEndpoints(s *Store, n int) []*Endpoint {
	eps := make([]*Endpoint, n)
	for i := range eps {
		eps[i] = s.Endpoint(fmt.Sprintf("127.0.0.1:%d", 10000+i))
	}
	return eps
}

func TestPickPrefersLowerLatency(t *testing.T) {
	s := NewStore(Config{})
	eps := newEndpoints(s, 2)
	// Teach the store that eps[1] is ten times slower.
	for range 5 {
		Lease{ep: eps[0]}.ep.inflight.Add(1)
		Lease{ep: eps[0]}.Done(time.Millisecond, false)
		eps[1].inflight.Add(1)
		Lease{ep: eps[1]}.Done(10*time.Millisecond, false)
	}
	counts := map[*Endpoint]int{}
	for range 200 {
		l := Pick(eps)
		counts[l.Endpoint()]++
		l.Done(time.Millisecond, false)
	}
	// With two endpoints both are always sampled, so the faster must win
	// while its score (latency × queue) stays lower.
	if counts[eps[1]] != 0 || counts[eps[0]] != 200 {
		t.Fatalf("picks: fast=%d slow=%d, want all on the fast endpoint", counts[eps[0]], counts[eps[1]])
	}
}

func TestPickSpreadsQueuedLoad(t *testing.T) {
	s := NewStore(Config{})
	eps := newEndpoints(s, 2)
	// Equal latency: holding leases open must alternate endpoints, because
	// each pending request raises the holder's score.
	var leases []Lease
	counts := map[*Endpoint]int{}
	for range 10 {
		l := Pick(eps)
		counts[l.Endpoint()]++
		leases = append(leases, l)
	}
	for _, l := range leases {
		l.Done(time.Millisecond, false)
	}
	if counts[eps[0]] != 5 || counts[eps[1]] != 5 {
		t.Fatalf("in-flight split %d/%d, want 5/5", counts[eps[0]], counts[eps[1]])
	}
}

func TestFailureAccrual(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	s := NewStore(Config{ConsecutiveFailures: 3, BaseEjection: 10 * time.Second, MaxEjection: 30 * time.Second, Now: clk.Now})
	eps := newEndpoints(s, 2)
	bad := eps[0]
	fail := func(e *Endpoint) {
		e.inflight.Add(1)
		Lease{ep: e}.Done(time.Millisecond, true)
	}
	// Two failures, a success, two failures: never three in a row.
	fail(bad)
	fail(bad)
	bad.inflight.Add(1)
	Lease{ep: bad}.Done(time.Millisecond, false)
	fail(bad)
	fail(bad)
	if bad.Ejected() {
		t.Fatal("ejected after non-consecutive failures")
	}
	fail(bad)
	if !bad.Ejected() {
		t.Fatal("not ejected after 3 consecutive failures")
	}
	pickAll := func(n int) (onBad int) {
		for range n {
			l := Pick(eps)
			if l.Endpoint() == bad {
				onBad++
			}
			l.Done(time.Millisecond, false)
		}
		return onBad
	}
	if n := pickAll(100); n != 0 {
		t.Fatalf("ejected endpoint picked %d times", n)
	}

	steps := []struct {
		name         string
		advance      time.Duration
		probe        bool
		probeFails   bool
		wantEjected  bool
		wantNextBase time.Duration // ejection length expected after a failed probe
	}{
		{name: "still ejected before the backoff ends", advance: 9 * time.Second, wantEjected: true},
		{name: "probe fails, backoff doubles", advance: 2 * time.Second, probe: true, probeFails: true, wantEjected: true, wantNextBase: 20 * time.Second},
		{name: "probe fails again, backoff capped", advance: 20 * time.Second, probe: true, probeFails: true, wantEjected: true, wantNextBase: 30 * time.Second},
		{name: "probe succeeds, endpoint re-admitted", advance: 30 * time.Second, probe: true, wantEjected: false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clk.Advance(st.advance)
			if st.probe {
				// The backoff has elapsed: the next pick that samples the
				// bad endpoint must probe it, and only one probe at a time.
				var probe Lease
				for probe.Endpoint() != bad {
					probe.Done(time.Millisecond, false)
					probe = Pick(eps)
				}
				if !probe.probe {
					t.Fatal("half-open endpoint picked without being a probe")
				}
				for range 50 {
					if l := Pick(eps); l.Endpoint() == bad {
						t.Fatal("second request sent to a half-open endpoint while its probe runs")
					} else {
						l.Done(time.Millisecond, false)
					}
				}
				probe.Done(time.Millisecond, st.probeFails)
			}
			if bad.Ejected() != st.wantEjected {
				t.Fatalf("Ejected()=%v, want %v", bad.Ejected(), st.wantEjected)
			}
			if st.wantNextBase > 0 {
				clk.Advance(st.wantNextBase - time.Nanosecond)
				if !bad.Ejected() {
					t.Fatalf("ejection shorter than %v", st.wantNextBase)
				}
				clk.Advance(-(st.wantNextBase - time.Nanosecond))
			}
		})
	}
	if n := pickAll(200); n == 0 {
		t.Fatal("re-admitted endpoint receives no traffic")
	}
}

func TestAllEjectedFailsOpen(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	s := NewStore(Config{ConsecutiveFailures: 1, Now: clk.Now})
	eps := newEndpoints(s, 3)
	for _, e := range eps {
		e.inflight.Add(1)
		Lease{ep: e}.Done(time.Millisecond, true)
	}
	l := Pick(eps)
	if l.Endpoint() == nil {
		t.Fatal("no endpoint when all are ejected; want fail-open")
	}
	l.Done(time.Millisecond, false)
}

func TestMaxRequests(t *testing.T) {
	s := NewStore(Config{MaxRequests: 2})
	eps := newEndpoints(s, 3)
	var leases []Lease
	for range 6 {
		l := Pick(eps)
		if l.Endpoint() == nil {
			t.Fatalf("pick %d failed below the total limit", len(leases))
		}
		leases = append(leases, l)
	}
	if l := Pick(eps); l.Endpoint() != nil {
		t.Fatalf("picked %s beyond its limit of 2", l.Endpoint().Addr())
	}
	for _, e := range eps {
		if e.InFlight() != 2 {
			t.Fatalf("%s has %d in flight, want 2", e.Addr(), e.InFlight())
		}
	}
	leases[0].Done(time.Millisecond, false)
	if l := Pick(eps); l.Endpoint() != leases[0].Endpoint() {
		t.Fatal("freed slot not reused")
	}
}

func TestStoreKeepsStateAndRetains(t *testing.T) {
	s := NewStore(Config{})
	a := s.Endpoint("127.0.0.1:1")
	a.inflight.Add(1)
	Lease{ep: a}.Done(7*time.Millisecond, false)
	if got := s.Endpoint("127.0.0.1:1"); got != a || got.Latency() != 7*time.Millisecond {
		t.Fatalf("state lost on second lookup: %v", got.Latency())
	}
	s.Endpoint("127.0.0.1:2")
	if n := s.Retain(func(addr string) bool { return addr == "127.0.0.1:2" }); n != 1 || s.Len() != 1 {
		t.Fatalf("Retain removed %d, left %d", n, s.Len())
	}
	if s.Endpoint("127.0.0.1:1") == a {
		t.Fatal("forgotten endpoint kept its state")
	}
}

func TestPickConcurrent(t *testing.T) {
	s := NewStore(Config{ConsecutiveFailures: 2, BaseEjection: time.Millisecond, MaxRequests: 4})
	eps := newEndpoints(s, 8)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				l := Pick(eps)
				l.Done(time.Duration(i%7)*time.Microsecond, (i+g)%5 == 0)
			}
		})
	}
	wg.Wait()
	for _, e := range eps {
		if e.InFlight() != 0 {
			t.Fatalf("%s leaks %d in-flight requests", e.Addr(), e.InFlight())
		}
		if e.probing.Load() {
			t.Fatalf("%s left probing", e.Addr())
		}
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	eps := newEndpoints(NewStore(Config{MaxRequests: 100}), 100)
	if n := testing.AllocsPerRun(1000, func() {
		Pick(eps).Done(time.Millisecond, false)
	}); n != 0 {
		t.Fatalf("Pick+Done allocates %v times", n)
	}
}

func BenchmarkPick100(b *testing.B) {
	eps := newEndpoints(NewStore(Config{MaxRequests: 100}), 100)
	b.ReportAllocs()
	for b.Loop() {
		Pick(eps).Done(time.Millisecond, false)
	}
}

// PickExcept never returns the excluded endpoint while another is in
// service, even when the excluded one scores best (it fails fast), and
// allocates nothing.
func TestPickExcept(t *testing.T) {
	s := NewStore(Config{})
	for _, n := range []int{2, 3, 10} {
		eps := newEndpoints(s, n)
		bad := eps[n/2]
		l := Pick([]*Endpoint{bad})
		l.Done(time.Microsecond, true) // the fastest endpoint there is
		for range 200 {
			l := PickExcept(eps, bad)
			if l.Endpoint() == nil || l.Endpoint() == bad {
				t.Fatalf("n=%d: PickExcept gave %v", n, l.Endpoint())
			}
			l.Done(time.Millisecond, false)
		}
	}
	alone := newEndpoints(s, 1)
	if l := PickExcept(alone, alone[0]); l.Endpoint() != alone[0] {
		t.Errorf("the only endpoint: %v", l.Endpoint())
	}
	if l := PickExcept(alone, nil); l.Endpoint() != alone[0] {
		t.Errorf("nothing excluded: %v", l.Endpoint())
	}
	eps := newEndpoints(NewStore(Config{MaxRequests: 100}), 100)
	if n := testing.AllocsPerRun(1000, func() { PickExcept(eps, eps[42]).Done(time.Millisecond, false) }); n != 0 {
		t.Errorf("PickExcept allocates %v times", n)
	}
}
