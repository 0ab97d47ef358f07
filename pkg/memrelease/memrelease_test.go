package memrelease

import (
	"context"
	"testing"
	"time"
)

// fakeProcess is a process whose CPU time and file-backed pages the test
// moves, and which counts releases.
type fakeProcess struct {
	cpu        time.Duration
	heap       int64
	file       int64
	collected  int
	unmapped   int
	now        time.Time
	releaseCPU time.Duration // what a collection costs
}

func newFake() (*Releaser, *fakeProcess) {
	p := &fakeProcess{now: time.Unix(1000, 0), file: 30 << 20, heap: 100 << 20}
	r := &Releaser{
		cpu:     func() time.Duration { return p.cpu },
		heap:    func() int64 { return p.heap },
		fileRSS: func() int64 { return p.file },
		freeOSMemory: func() {
			p.collected++
			p.cpu += p.releaseCPU
			p.heap = 40 << 20
		},
		releaseExecutable: func() (int, error) {
			p.unmapped++
			p.file = 4 << 20
			return 26 << 20, nil
		},
	}
	r.defaults()
	return r, p
}

// tick advances one tick during which the process used cpu.
func (p *fakeProcess) tick(r *Releaser, cpu time.Duration) { p.ticks(r, 1, cpu) }

// ticks advances n ticks during each of which the process used cpu.
func (p *fakeProcess) ticks(r *Releaser, n int, cpu time.Duration) {
	for range n {
		p.cpu += cpu
		p.now = p.now.Add(r.Tick)
		r.step(p.now)
	}
}

// firstBurst starts the releaser, runs one busy tick and one quiet one.
func (p *fakeProcess) firstBurst(r *Releaser) {
	p.tick(r, 0)
	p.tick(r, time.Second)
	p.tick(r, 0)
}

func TestReleasesOnceQuietAfterABurst(t *testing.T) {
	r, p := newFake()
	p.releaseCPU = 50 * time.Millisecond
	p.tick(r, 0) // first look
	// A burst: nothing is released while it lasts.
	p.ticks(r, 3, 900*time.Millisecond)
	if p.collected != 0 || p.unmapped != 0 {
		t.Fatalf("released during the burst: %d collections, %d unmaps", p.collected, p.unmapped)
	}
	// Quiet: the heap is collected and the executable unmapped, once.
	p.tick(r, time.Millisecond)
	if p.collected != 1 || p.unmapped != 1 {
		t.Fatalf("after the burst: %d collections, %d unmaps; want 1 and 1", p.collected, p.unmapped)
	}
	// One more collection CollectEvery later, for what caches dropped
	// after the burst; then staying quiet (keepalives) releases nothing
	// more: the collections' own CPU is not counted as work.
	p.ticks(r, 4, time.Millisecond)
	if p.collected != 1 {
		t.Fatalf("%d collections 4 ticks after the first, want 1", p.collected)
	}
	p.tick(r, time.Millisecond)
	if p.collected != 2 {
		t.Fatalf("%d collections CollectEvery after the first, want 2", p.collected)
	}
	p.ticks(r, 20, time.Millisecond)
	if p.collected != 2 || p.unmapped != 1 {
		t.Fatalf("while idle: %d collections, %d unmaps; want still 2 and 1", p.collected, p.unmapped)
	}
	// Idle work adds up to a collection eventually.
	p.ticks(r, 100, time.Millisecond)
	if p.collected != 4 {
		t.Fatalf("after 120 ms of idle work since the last collection and CollectEvery more: %d collections, want 4 (that one and its follow-up)", p.collected)
	}
}

func TestCollectsAgainWhenTheHeapGrows(t *testing.T) {
	r, p := newFake()
	p.firstBurst(r)
	p.ticks(r, 5, 0)
	if p.collected != 2 {
		t.Fatalf("%d collections after the first burst and its follow-up, want 2", p.collected)
	}
	// A small burst (a status write) leaves 6 MiB of garbage for little
	// CPU: collected once quiet, CollectEvery after the last collection.
	p.heap += 6 << 20
	p.tick(r, 10*time.Millisecond)
	if p.collected != 2 {
		t.Fatalf("collected again %s after the last time; want CollectEvery (%s) between two", r.Tick, r.CollectEvery)
	}
	p.ticks(r, 4, 0)
	if p.collected != 3 {
		t.Fatalf("%d collections after the heap grew by 6 MiB, want 3", p.collected)
	}
	p.ticks(r, 5, 0)
	if p.collected != 4 {
		t.Fatalf("%d collections; want 4 with the follow-up", p.collected)
	}
	// Growth under HeapGrowth waits.
	p.heap += 1 << 20
	p.ticks(r, 10, 0)
	if p.collected != 4 {
		t.Fatalf("collected for 1 MiB of growth (%d collections)", p.collected)
	}
}

func TestUnmapsAgainWhenCodePagesComeBack(t *testing.T) {
	r, p := newFake()
	p.firstBurst(r)
	if p.unmapped != 1 {
		t.Fatalf("%d unmaps after the first burst, want 1", p.unmapped)
	}
	// A small burst elsewhere (a status write) maps 12 MiB of code again,
	// using too little CPU for a collection.
	p.file += 12 << 20
	p.tick(r, 30*time.Millisecond)
	p.tick(r, 0)
	if p.unmapped != 1 {
		t.Fatalf("unmapped again %s after the last time; want ExecEvery (%s) between two", r.Tick*2, r.ExecEvery)
	}
	p.ticks(r, 5, 0)
	if p.unmapped != 2 {
		t.Fatalf("%d unmaps, want 2", p.unmapped)
	}
	// Pages code run periodically maps back, under FileGrowth, stay.
	p.file += 1 << 20
	p.ticks(r, 10, 0)
	if p.unmapped != 2 {
		t.Fatalf("unmapped for 1 MiB of growth (%d unmaps)", p.unmapped)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	r := &Releaser{Tick: time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestReadsThisProcess(t *testing.T) {
	if heapObjects() <= 0 {
		t.Error("no heap size read")
	}
	if processCPU() <= 0 {
		t.Error("no CPU time read for this process")
	}
	if fileRSS() <= 0 {
		t.Error("no file-backed resident memory read for this process")
	}
}
