package main

import (
	"errors"
	"io/fs"
	"testing"
)

func TestDefaultProcs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  int
	}{
		{"no cgroup files", nil, 1},
		{"container, 500m", map[string]string{"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "50000 100000\n"}, 1},
		{"container, 1 CPU", map[string]string{"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "100000 100000\n"}, 1},
		{"container, 1.5 CPUs", map[string]string{"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "150000 100000\n"}, 2},
		{"container, no limit", map[string]string{"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "max 100000\n"}, 1},
		{"host view, own cgroup", map[string]string{
			"/proc/self/cgroup":                       "0::/kubepods/pod1/c1\n",
			"/sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "320000 100000\n",
			"/sys/fs/cgroup/cpu.max":                  "max 100000\n",
		}, 4},
		{"cgroup v1 without files", map[string]string{"/proc/self/cgroup": "4:cpu,cpuacct:/x\n"}, 1},
		{"cgroup v1, 250m", map[string]string{
			"/proc/self/cgroup":                      "4:cpu,cpuacct:/x\n0::/\n",
			"/sys/fs/cgroup/cpu/x/cpu.cfs_quota_us":  "25000\n",
			"/sys/fs/cgroup/cpu/x/cpu.cfs_period_us": "100000\n",
		}, 1},
		{"cgroup v1, 2.5 CPUs", map[string]string{
			"/proc/self/cgroup":                      "4:cpu,cpuacct:/x\n0::/\n",
			"/sys/fs/cgroup/cpu/x/cpu.cfs_quota_us":  "250000\n",
			"/sys/fs/cgroup/cpu/x/cpu.cfs_period_us": "100000\n",
		}, 3},
		{"cgroup v1, no limit", map[string]string{
			"/proc/self/cgroup":                    "2:cpuacct:/\n1:cpu:/\n",
			"/sys/fs/cgroup/cpu/cpu.cfs_quota_us":  "-1\n",
			"/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
		}, 1},
		{"limit above the CPU count", map[string]string{"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "1600000 100000\n"}, 8},
		{"garbage", map[string]string{"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "lots\n"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			read := func(name string) ([]byte, error) {
				if s, ok := tc.files[name]; ok {
					return []byte(s), nil
				}
				return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("no such file")}
			}
			got, ok := defaultProcs(read, 8)
			if got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
			// ok means a cgroup CPU file was read: in these cases, those
			// that give one besides /proc/self/cgroup.
			if readable := tc.files["/proc/self/cgroup"] != "" && len(tc.files) > 1; ok != readable {
				t.Errorf("ok = %v, want %v", ok, readable)
			}
		})
	}
}

// An in-place resize of the container's CPU limit reaches GOMAXPROCS.
func TestFollowCPULimit(t *testing.T) {
	cpuMax := "max 100000\n"
	read := func(name string) ([]byte, error) {
		switch {
		case cpuMax == "":
			return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("too many open files")}
		case name == "/proc/self/cgroup":
			return []byte("0::/\n"), nil
		case name == "/sys/fs/cgroup/cpu.max":
			return []byte(cpuMax), nil
		}
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("no such file")}
	}
	procs := 1
	var sets []int
	f := procsFollower{read: read, numCPU: 8, set: func(n int) int {
		prev := procs
		if n > 0 {
			procs = n
			sets = append(sets, n)
		}
		return prev
	}}
	for _, step := range []struct {
		cpuMax   string
		from, to int
		changed  bool
	}{
		{"max 100000\n", 1, 1, false},
		{"250000 100000\n", 1, 3, true}, // resized to 2.5 CPUs
		{"250000 100000\n", 3, 3, false},
		{"", 3, 3, false},            // unreadable: says nothing about the limit
		{"max 100000\n", 3, 1, true}, // limit removed
	} {
		cpuMax = step.cpuMax
		from, to, changed := f.step()
		if from != step.from || to != step.to || changed != step.changed {
			t.Errorf("cpu.max %q: step() = %d, %d, %v; want %d, %d, %v", step.cpuMax, from, to, changed, step.from, step.to, step.changed)
		}
	}
	if len(sets) != 2 || procs != 1 {
		t.Errorf("GOMAXPROCS set %v, now %d; want [3 1], 1", sets, procs)
	}
}

func TestAutoProcs(t *testing.T) {
	for _, tc := range []struct {
		flag int
		env  string
		want bool
	}{
		{0, "", true},
		{-1, "", true},
		{2, "", false},
		{0, "4", false},
		{2, "4", false},
		// Go's runtime ignores these, so the proxy still chooses.
		{0, "0", true},
		{0, "auto", true},
		{0, "-2", true},
	} {
		getenv := func(k string) string {
			if k == "GOMAXPROCS" {
				return tc.env
			}
			return ""
		}
		if got := autoProcs(tc.flag, getenv); got != tc.want {
			t.Errorf("-procs %d, GOMAXPROCS=%q: autoProcs = %v, want %v", tc.flag, tc.env, got, tc.want)
		}
	}
}
