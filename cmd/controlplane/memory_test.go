package main

import (
	"flag"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestParseMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{in: "536870912\n", want: 512 << 20},
		{in: "max\n", want: 0},
		{in: "max", want: 0},
		// cgroup v1's "no limit".
		{in: "9223372036854771712\n", want: 0},
		{in: "0\n", want: 0},
		{in: "", err: true},
		{in: "512Mi\n", err: true},
		{in: "-1\n", want: 0},
	} {
		got, err := parseMemoryLimit(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseMemoryLimit(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParseProcCgroup(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		v2, v1   string
	}{
		{name: "cgroup v2", in: "0::/kubepods.slice/pod1/cri-abc\n", v2: "/kubepods.slice/pod1/cri-abc"},
		{name: "v2 in its own cgroup namespace", in: "0::/\n", v2: "/"},
		{name: "cgroup v1", in: "12:pids:/kubepods/pod1/abc\n11:cpu,cpuacct:/kubepods/pod1/abc\n9:memory:/kubepods/pod1/abc\n1:name=systemd:/kubepods/pod1/abc\n", v1: "/kubepods/pod1/abc"},
		{name: "hybrid", in: "9:memory:/user.slice\n0::/user.slice/session-1.scope\n", v2: "/user.slice/session-1.scope", v1: "/user.slice"},
		{name: "garbage", in: "not a cgroup line\n"},
	} {
		v2, v1, err := parseProcCgroup(strings.NewReader(tc.in))
		if err != nil || v2 != tc.v2 || v1 != tc.v1 {
			t.Errorf("%s: got v2 %q v1 %q (%v), want v2 %q v1 %q", tc.name, v2, v1, err, tc.v2, tc.v1)
		}
	}
}

func TestCgroupMemoryLimit(t *testing.T) {
	write := func(t *testing.T, path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		files  map[string]string
		cgroup string
		want   int64
	}{
		{
			name:   "v2, the process's own cgroup seen from the host",
			cgroup: "0::/kubepods/pod1/c1\n",
			files:  map[string]string{"kubepods/pod1/c1/memory.max": "268435456\n", "memory.max": "max\n"},
			want:   256 << 20,
		},
		{
			name:   "v2 in a cgroup namespace: the container's limit is at the root",
			cgroup: "0::/\n",
			files:  map[string]string{"memory.max": "536870912\n"},
			want:   512 << 20,
		},
		{
			name:   "v2, path not mounted: falls back to the root",
			cgroup: "0::/elsewhere\n",
			files:  map[string]string{"memory.max": "134217728\n"},
			want:   128 << 20,
		},
		{
			name:   "v2 without a limit",
			cgroup: "0::/\n",
			files:  map[string]string{"memory.max": "max\n"},
		},
		{
			name:   "v1",
			cgroup: "9:memory:/kubepods/pod1/c1\n",
			files:  map[string]string{"memory/kubepods/pod1/c1/memory.limit_in_bytes": "268435456\n"},
			want:   256 << 20,
		},
		{
			name:   "v1 without a limit",
			cgroup: "9:memory:/\n",
			files:  map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"},
		},
		{
			name:   "no cgroup files at all",
			cgroup: "0::/\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for p, c := range tc.files {
				write(t, filepath.Join(root, "fs", p), c)
			}
			self := filepath.Join(root, "self-cgroup")
			write(t, self, tc.cgroup)
			got, err := cgroupMemoryLimit(filepath.Join(root, "fs"), self)
			if err != nil || got != tc.want {
				t.Errorf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}

	// A malformed limit is reported, not taken for "no limit".
	root := t.TempDir()
	write(t, filepath.Join(root, "fs", "memory.max"), "lots\n")
	write(t, filepath.Join(root, "self"), "0::/\n")
	if _, err := cgroupMemoryLimit(filepath.Join(root, "fs"), filepath.Join(root, "self")); err == nil {
		t.Errorf("a malformed memory.max gave no error")
	}
}

func TestSetMemoryLimitRespectsGOMEMLIMIT(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "300MiB")
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "memory.max"), []byte("1048576\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := cgroupRoot
	cgroupRoot = root
	defer func() { cgroupRoot = old }()
	if got, err := setMemoryLimit(); err != nil || got != 0 {
		t.Errorf("with GOMEMLIMIT set: set %d, %v; want nothing set", got, err)
	}
}

// TestGCPercent: --gc-percent applies when given, else unless GOGC is set.
func TestGCPercent(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	for _, tc := range []struct {
		args  []string
		gogc  string
		want  int
		apply bool
	}{
		{args: nil, want: defaultGCPercent, apply: true},
		{args: nil, gogc: "200", apply: false},
		{args: []string{"--gc-percent=80"}, gogc: "200", want: 80, apply: true},
		{args: []string{"--gc-percent=-1"}, want: -1, apply: true},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		o, err := parseFlags(fs, append([]string{"--mesh-name=m", "--namespace=n", "--revision=1"}, tc.args...))
		if err != nil {
			t.Fatal(err)
		}
		debug.SetGCPercent(100)
		applied := setGCPercent(o, func(k string) string {
			if k == "GOGC" {
				return tc.gogc
			}
			return ""
		})
		got := debug.SetGCPercent(100)
		if applied != tc.apply || (tc.apply && got != tc.want) {
			t.Errorf("%v with GOGC=%q: applied %v, GOGC %d; want %v, %d", tc.args, tc.gogc, applied, got, tc.apply, tc.want)
		}
	}
}
