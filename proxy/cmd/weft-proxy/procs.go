package main

import (
	"context"
	"log/slog"
	"math"
	"os"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// autoProcs says whether the proxy chooses GOMAXPROCS itself: neither
// -procs nor a $GOMAXPROCS that Go's runtime accepts (a number above 0;
// it ignores anything else) set it.
func autoProcs(procsFlag int, getenv func(string) string) bool {
	if procsFlag > 0 {
		return false
	}
	n, err := strconv.Atoi(getenv("GOMAXPROCS"))
	return err != nil || n <= 0
}

// defaultProcs is GOMAXPROCS when autoProcs: the container's CPU limit
// rounded up, at most numCPU; without a limit (or when the cgroup cannot
// be read), 1. ok is false when the cgroup could not be read.
//
// Go's own default is the limit rounded up but at least 2, or every CPU of
// the node without a limit: 64 threads running Go code, and 16 of them
// marking during each collection, for a sidecar of a pod that asked for
// 50m. A second P also costs 15-25% more CPU per request in wake-ups across
// threads (bench/proxy/RESULTS.md). One P serves thousands of requests a
// second; a busier pod sets the mesh's proxy concurrency (which the
// injector passes as $GOMAXPROCS) or a CPU limit. readFile is os.ReadFile.
func defaultProcs(readFile func(string) ([]byte, error), numCPU int) (n int, ok bool) {
	limit, ok := cpuLimit(readFile)
	if limit <= 0 {
		return 1, ok
	}
	return max(1, min(int(math.Ceil(limit)), numCPU)), ok
}

// followCPULimit keeps GOMAXPROCS at defaultProcs when the container's CPU
// limit changes (an in-place pod resize). Go's runtime tracks the limit
// itself, but only until the program sets GOMAXPROCS, as main does.
func followCPULimit(ctx context.Context, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	f := procsFollower{read: os.ReadFile, numCPU: runtime.NumCPU(), set: runtime.GOMAXPROCS}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if from, to, changed := f.step(); changed {
				log.Info("CPU limit changed", "procs", to, "was", from)
			}
		}
	}
}

// procsFollower is one look of followCPULimit.
type procsFollower struct {
	read   func(string) ([]byte, error)
	numCPU int
	// set is runtime.GOMAXPROCS: sets n when n > 0, returns the previous.
	set func(n int) int
}

// step changes nothing when the cgroup cannot be read (out of file
// descriptors under load, say): that says nothing about the limit.
func (f procsFollower) step() (from, to int, changed bool) {
	to, ok := defaultProcs(f.read, f.numCPU)
	from = f.set(0)
	if !ok || from == to {
		return from, from, false
	}
	f.set(to)
	return from, to, true
}

// cpuLimit returns the CPU limit of the process's cgroup (v2, else v1) in
// CPUs, 0 for none; ok is false when no cgroup file could be read.
func cpuLimit(readFile func(string) ([]byte, error)) (limit float64, ok bool) {
	v2, v1 := "/", ""
	if b, err := readFile("/proc/self/cgroup"); err == nil {
		for line := range strings.Lines(string(b)) {
			// hierarchy-ID:controllers:path; v2's is "0::path".
			f := strings.SplitN(strings.TrimSpace(line), ":", 3)
			if len(f) != 3 {
				continue
			}
			if f[0] == "0" && f[1] == "" {
				v2 = f[2]
			} else if slices.Contains(strings.Split(f[1], ","), "cpu") {
				v1 = f[2]
			}
		}
	}
	// In a cgroup namespace (a container) the process's cgroup is the root
	// of the mount; on the host it is a path below it.
	for _, f := range []string{path.Join("/sys/fs/cgroup", v2, "cpu.max"), "/sys/fs/cgroup/cpu.max"} {
		if b, err := readFile(f); err == nil {
			return cpuMax(string(b)), true
		}
	}
	for _, dir := range []string{path.Join("/sys/fs/cgroup/cpu", v1), "/sys/fs/cgroup/cpu"} {
		q, err1 := readFile(path.Join(dir, "cpu.cfs_quota_us"))
		p, err2 := readFile(path.Join(dir, "cpu.cfs_period_us"))
		if err1 == nil && err2 == nil {
			return cpuMax(string(q) + " " + string(p)), true
		}
	}
	return 0, false
}

// cpuMax parses "quota period" (cgroup v2's cpu.max; v1's quota is -1
// without a limit, v2's "max") into CPUs, 0 meaning no limit.
func cpuMax(s string) float64 {
	f := strings.Fields(s)
	if len(f) != 2 || f[0] == "max" {
		return 0
	}
	quota, err1 := strconv.ParseFloat(f[0], 64)
	period, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil || quota <= 0 || period <= 0 {
		return 0
	}
	return quota / period
}
