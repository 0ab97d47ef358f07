// Package memrelease gives back to the kernel what a burst of work left
// resident in a long-running process, once the process is quiet again.
//
// Two things stay behind after a burst (a thousand proxies connecting, a
// rollout's changes, a status write): the heap the burst grew, which Go keeps
// until its next collection (up to twice the live heap, and an idle process
// triggers none), and the executable's pages the burst's code touched (the
// kernel maps 64 KiB around each page touched, and compiling, serving and
// talking to the API server run code from all over a 40 MB binary). A
// Releaser watches the process's CPU time, heap and file-backed resident
// pages and, once a tick passes with almost no CPU used, collects and returns
// the free heap if enough work happened or the heap grew since the last
// collection, and unmaps the executable's read-only pages (see pkg/residency)
// if they grew. The pages
// stay in the page cache; what the next burst needs comes back by minor
// faults.
package memrelease

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"syscall"
	"time"

	"github.com/weftmesh/weft/pkg/residency"
)

// Releaser releases memory after bursts. The zero value uses the defaults
// documented on each field.
type Releaser struct {
	// Tick is how often it looks (1s).
	Tick time.Duration
	// QuietCPU is the CPU time used in one tick under which the process is
	// quiet (2% of Tick).
	QuietCPU time.Duration
	// HeapAfter is the CPU time used since the last collection that makes
	// another worth it (100ms): idle keepalives and lease renewals add up
	// to it in minutes, a burst at once.
	HeapAfter time.Duration
	// HeapGrowth is the growth of the heap's objects (live and garbage)
	// since the last collection that makes another worth it (4 MiB): a
	// small burst such as a status write leaves its garbage until the heap
	// doubles, which an idle process takes hours to reach.
	HeapGrowth int64
	// CollectEvery is the least time between two collections (5s). A
	// collection after a burst is followed by one more CollectEvery later
	// if the process stays quiet: caches drop what the burst put in them
	// a moment after it (the config server's snapshots after a second), and
	// what they dropped is garbage until the next collection.
	CollectEvery time.Duration
	// FileGrowth is the growth of file-backed resident memory since the
	// last release that makes releasing the executable's pages worth it
	// (4 MiB).
	FileGrowth int64
	// ExecEvery is the least time between two releases of the executable's
	// pages (5s), so that code run periodically stays mapped.
	ExecEvery time.Duration
	// OnRelease, if set, is told what was released (for logs).
	OnRelease func(collected bool, unmappedBytes int, err error)

	// For tests: the process's CPU time and file-backed resident bytes,
	// and the two releases.
	cpu               func() time.Duration
	heap              func() int64
	fileRSS           func() int64
	freeOSMemory      func()
	releaseExecutable func() (int, error)

	lastCPU     time.Duration // at the previous tick
	gcCPU       time.Duration // at the last collection
	gcHeap      int64         // heap objects after the last collection
	gcAt        time.Time
	followUp    bool  // a collection is due CollectEvery after the last one
	execFile    int64 // file-backed resident bytes after the last executable release
	execAt      time.Time
	initialized bool
}

func (r *Releaser) defaults() {
	if r.Tick <= 0 {
		r.Tick = time.Second
	}
	if r.QuietCPU <= 0 {
		r.QuietCPU = r.Tick / 50
	}
	if r.HeapAfter <= 0 {
		r.HeapAfter = 100 * time.Millisecond
	}
	if r.HeapGrowth <= 0 {
		r.HeapGrowth = 4 << 20
	}
	if r.CollectEvery <= 0 {
		r.CollectEvery = 5 * time.Second
	}
	if r.FileGrowth <= 0 {
		r.FileGrowth = 4 << 20
	}
	if r.ExecEvery <= 0 {
		r.ExecEvery = 5 * time.Second
	}
	if r.cpu == nil {
		r.cpu = processCPU
	}
	if r.heap == nil {
		r.heap = heapObjects
	}
	if r.fileRSS == nil {
		r.fileRSS = fileRSS
	}
	if r.freeOSMemory == nil {
		// Two collections: what the burst left in sync.Pools (gRPC's and
		// TLS's buffers) survives the first one in the pools' victim
		// caches. FreeOSMemory collects once more and returns the free
		// pages.
		r.freeOSMemory = func() { runtime.GC(); debug.FreeOSMemory() }
	}
	if r.releaseExecutable == nil {
		r.releaseExecutable = residency.ReleaseExecutable
	}
}

// Run looks every Tick until ctx ends.
func (r *Releaser) Run(ctx context.Context) error {
	r.defaults()
	t := time.NewTicker(r.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			r.step(now)
		}
	}
}

// step is one tick.
func (r *Releaser) step(now time.Time) {
	cpu := r.cpu()
	if !r.initialized {
		// Start-up is a burst: everything since the process began counts.
		r.initialized = true
		r.lastCPU, r.execAt, r.gcAt = cpu, now.Add(-r.ExecEvery), now.Add(-r.CollectEvery)
		return
	}
	used := cpu - r.lastCPU
	r.lastCPU = cpu
	if used > r.QuietCPU {
		return
	}
	burst := cpu-r.gcCPU >= r.HeapAfter || r.heap()-r.gcHeap >= r.HeapGrowth
	collect := (burst || r.followUp) && now.Sub(r.gcAt) >= r.CollectEvery
	unmap := r.fileRSS()-r.execFile >= r.FileGrowth && now.Sub(r.execAt) >= r.ExecEvery
	if !collect && !unmap {
		return
	}
	if collect {
		r.freeOSMemory()
	}
	var n int
	var err error
	if unmap {
		n, err = r.releaseExecutable()
		r.execAt = now
		r.execFile = r.fileRSS()
	}
	// What releasing cost is not work to release after.
	r.lastCPU = r.cpu()
	if collect {
		r.gcCPU, r.gcHeap, r.gcAt = r.lastCPU, r.heap(), now
		r.followUp = burst
	}
	if r.OnRelease != nil {
		r.OnRelease(collect, n, err)
	}
}

// processCPU is the user and system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// heapObjects is the size of the heap's objects, live and not yet collected.
func heapObjects() int64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(sample[0].Value.Uint64())
}

// fileRSS is the process's file-backed resident memory (the third field of
// /proc/self/statm, in pages; shared memory is counted too, and a control
// plane has none). 0 where it cannot be read: nothing is unmapped then.
func fileRSS() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, resident, shared int64
	if _, err := fmt.Sscan(string(b), &size, &resident, &shared); err != nil {
		return 0
	}
	return shared * int64(os.Getpagesize())
}
