// Package procstat reads what the benchmarks record about a process and the
// machine from /proc: CPU time, memory, load average, CPU model. Linux only;
// a value that cannot be read is 0 or "?".
package procstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat.
const userHZ = 100

// CPUSeconds is the user+system CPU time of process pid (fields 14 and 15
// of /proc/<pid>/stat, counted after the parenthesised command name, which
// may contain spaces).
func CPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return 0
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	k, _ := strconv.ParseFloat(f[12], 64)
	return (u + k) / userHZ
}

// StatusKiB is a "kB" field of /proc/<pid>/status, such as VmRSS, VmHWM or
// RssAnon, in KiB.
func StatusKiB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	return statusField(string(b), field)
}

func statusField(status, field string) int64 {
	for _, l := range strings.Split(status, "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0
			}
			kb, _ := strconv.ParseInt(f[0], 10, 64)
			return kb
		}
	}
	return 0
}

// StatusMiB is StatusKiB in MiB.
func StatusMiB(pid int, field string) float64 { return float64(StatusKiB(pid, field)) / 1024 }

// LoadAverage is the machine's 1, 5 and 15 minute load averages, as
// /proc/loadavg writes them.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// CPUModel is the first "model name" of /proc/cpuinfo.
func CPUModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			if _, v, ok := strings.Cut(l, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "?"
}
