package main

import (
	"path"
	"slices"
	"strconv"
	"strings"
)

// oneCPU says whether the proxy's cgroup limits it to one CPU or less.
// Go's container-aware GOMAXPROCS stops at 2 whatever the limit, and a
// second P costs the proxy 15-25% more CPU per request in wake-ups across
// threads (bench/proxy/RESULTS.md), which a sidecar limited to one CPU
// pays without gaining parallelism. readFile is os.ReadFile.
func oneCPU(readFile func(string) ([]byte, error)) bool {
	limit := cpuLimit(readFile)
	return limit > 0 && limit <= 1
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
