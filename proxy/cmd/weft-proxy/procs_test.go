package main

import (
	"errors"
	"io/fs"
	"testing"
)

func TestOneCPU(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  bool
	}{
		{"no cgroup files", nil, false},
		{"container, 500m", map[string]string{"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "50000 100000\n"}, true},
		{"container, 1 CPU", map[string]string{"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "100000 100000\n"}, true},
		{"container, 1.5 CPUs", map[string]string{"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "150000 100000\n"}, false},
		{"container, no limit", map[string]string{"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "max 100000\n"}, false},
		{"host view, own cgroup", map[string]string{
			"/proc/self/cgroup":                       "0::/kubepods/pod1/c1\n",
			"/sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "20000 100000\n",
			"/sys/fs/cgroup/cpu.max":                  "max 100000\n",
		}, true},
		{"cgroup v1 without files", map[string]string{"/proc/self/cgroup": "4:cpu,cpuacct:/x\n"}, false},
		{"cgroup v1, 250m", map[string]string{
			"/proc/self/cgroup":                      "4:cpu,cpuacct:/x\n0::/\n",
			"/sys/fs/cgroup/cpu/x/cpu.cfs_quota_us":  "25000\n",
			"/sys/fs/cgroup/cpu/x/cpu.cfs_period_us": "100000\n",
		}, true},
		{"cgroup v1, no limit", map[string]string{
			"/proc/self/cgroup":                    "2:cpuacct:/\n1:cpu:/\n",
			"/sys/fs/cgroup/cpu/cpu.cfs_quota_us":  "-1\n",
			"/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
		}, false},
		{"garbage", map[string]string{"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/cpu.max": "lots\n"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			read := func(name string) ([]byte, error) {
				if s, ok := tc.files[name]; ok {
					return []byte(s), nil
				}
				return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("no such file")}
			}
			if got := oneCPU(read); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
