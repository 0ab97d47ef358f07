package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"

	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
)

// defaultGCPercent is the control plane's GOGC. Its live heap is mostly what
// a thousand connections hold, scattered by the handshakes' garbage, and Go
// grows the heap to twice that before it collects: at 50 a thousand proxies
// take 86–90 MiB instead of 91–98, and a burst peaks 25–30 MiB lower, for
// about 10–20% more CPU per change (36 instead of 29 ms for one route, 148
// instead of 130 ms for a change every proxy sees; bench/controlplane).
const defaultGCPercent = 50

// setGCPercent applies --gc-percent when it was given or when GOGC is not
// set in the environment (which then wins, as the runtime read it).
func setGCPercent(o options, getenv func(string) string) bool {
	if !o.gcPercentGiven && getenv("GOGC") != "" {
		return false
	}
	debug.SetGCPercent(o.gcPercent)
	return true
}

// memoryLimitFraction is the share of the container's memory limit given to
// the Go runtime as its soft limit: the rest is for the binary's mapped code
// and what the runtime does not count.
const memoryLimitFraction = 0.9

// cgroupRoot is where the cgroup file system is mounted (tests change it).
var cgroupRoot = "/sys/fs/cgroup"

// setMemoryLimit gives the Go runtime a soft memory limit of 90% of the
// container's cgroup memory limit, unless GOMEMLIMIT is set or there is no
// limit. Without it the heap may grow to twice its live size before a
// collection, past a limit the kernel then enforces by killing the process.
// It returns the limit set, 0 if none.
func setMemoryLimit() (int64, error) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0, nil
	}
	limit, err := cgroupMemoryLimit(cgroupRoot, "/proc/self/cgroup")
	if err != nil || limit <= 0 {
		return 0, err
	}
	soft := int64(float64(limit) * memoryLimitFraction)
	debug.SetMemoryLimit(soft)
	return soft, nil
}

// cgroupMemoryLimit reads the memory limit of the cgroup this process is
// in: memory.max (cgroup v2) or memory.limit_in_bytes (v1), looked up
// first under the process's own cgroup path (a host, or a container that
// sees the whole hierarchy) and then at the root (a container with its own
// cgroup namespace sees its cgroup there). 0 means no limit.
func cgroupMemoryLimit(root, procSelfCgroup string) (int64, error) {
	f, err := os.Open(procSelfCgroup)
	if err != nil {
		return 0, nil
	}
	defer f.Close()
	v2, v1, err := parseProcCgroup(f)
	if err != nil {
		return 0, err
	}
	var candidates []string
	if v2 != "" {
		candidates = append(candidates, path.Join(root, v2, "memory.max"), path.Join(root, "memory.max"))
	}
	if v1 != "" {
		candidates = append(candidates, path.Join(root, "memory", v1, "memory.limit_in_bytes"), path.Join(root, "memory", "memory.limit_in_bytes"))
	}
	for _, c := range candidates {
		b, err := os.ReadFile(c)
		if err != nil {
			continue
		}
		return parseMemoryLimit(string(b))
	}
	return 0, nil
}

// parseProcCgroup returns the cgroup v2 path ("0::<path>") and the v1
// memory controller's path ("<n>:...memory...:<path>") from
// /proc/self/cgroup.
func parseProcCgroup(r io.Reader) (v2, v1 string, err error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2 = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				v1 = parts[2]
			}
		}
	}
	return v2, v1, sc.Err()
}

// noLimitV1 is what cgroup v1 reports for "no limit": the largest page
// multiple of an int64, or thereabouts; any value this large is no limit.
const noLimitV1 = 1 << 62

// parseMemoryLimit parses memory.max or memory.limit_in_bytes: a number of
// bytes, or "max" for none (0).
func parseMemoryLimit(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing the cgroup memory limit %q: %w", s, err)
	}
	if n <= 0 || n >= noLimitV1 {
		return 0, nil
	}
	return n, nil
}

// maxPooledBuffer is the largest buffer gRPC keeps in its pool for reuse.
const maxPooledBuffer = 32 << 10

// smallBufferPool is gRPC's default buffer pool for buffers up to
// maxPooledBuffer; larger ones (the encoding of a full snapshot, hundreds
// of KiB) are allocated to size and left to the collector. gRPC's own pool
// rounds them up to 1 MiB and keeps them: after a thousand proxies connect
// it held about 20 MiB of them, idle.
type smallBufferPool struct{ mem.BufferPool }

func (p smallBufferPool) Get(size int) *[]byte {
	if size > maxPooledBuffer {
		b := make([]byte, size)
		return &b
	}
	return p.BufferPool.Get(size)
}

func (p smallBufferPool) Put(b *[]byte) {
	if cap(*b) > maxPooledBuffer {
		return
	}
	p.BufferPool.Put(b)
}

// useSmallBufferPool makes smallBufferPool gRPC's default pool in this
// process (the codec encodes messages into it).
func useSmallBufferPool() {
	experimental.SetDefaultBufferPool(smallBufferPool{mem.DefaultBufferPool()})
}
