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

// defaultProcs is GOMAXPROCS when neither -procs nor $GOMAXPROCS says: the
// container's CPU limit rounded up, at most numCPU; without a limit, 1.
//
// Go's own default is the limit rounded up but at least 2, or every CPU of
// the node without a limit: 64 threads running Go code, and 16 of them
// marking during each collection, for a sidecar of a pod that asked for
// 50m. A second P also costs 15-25% more CPU per request in wake-ups across
// threads (bench/proxy/RESULTS.md). One P serves several thousand requests
// a second; a busier pod sets a CPU limit or the mesh's proxy concurrency
// (which the injector passes as $GOMAXPROCS). readFile is os.ReadFile.
func defaultProcs(readFile func(string) ([]byte, error), numCPU int) int {
	limit := cpuLimit(readFile)
	if limit <= 0 {
		return 1
	}
	return max(1, min(int(math.Ceil(limit)), numCPU))
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

func (f procsFollower) step() (from, to int, changed bool) {
	to = defaultProcs(f.read, f.numCPU)
	if from = f.set(0); from == to {
		return from, to, false
	}
	f.set(to)
	return from, to, true
}

// cpuLimit returns the CPU limit of the process's cgroup (v2, else v1) in
// CPUs, or 0 for none or unknown.
func cpuLimit(readFile func(string) ([]byte, error)) float64 {
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
			return cpuMax(string(b))
		}
	}
	for _, dir := range []string{path.Join("/sys/fs/cgroup/cpu", v1), "/sys/fs/cgroup/cpu"} {
		q, err1 := readFile(path.Join(dir, "cpu.cfs_quota_us"))
		p, err2 := readFile(path.Join(dir, "cpu.cfs_period_us"))
		if err1 == nil && err2 == nil {
			return cpuMax(string(q) + " " + string(p))
		}
	}
	return 0
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
