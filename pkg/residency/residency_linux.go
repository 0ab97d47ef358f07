//go:build linux

package residency

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

func releaseExecutable() (int, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	spans, err := releasable(f, exe)
	f.Close()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range spans {
		// For a private file mapping without private copies, DONTNEED only
		// removes the page table entries: the next access faults the same
		// bytes back in from the page cache.
		// The raw call: these addresses are not Go memory to take a slice of.
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, s.start, s.end-s.start, unix.MADV_DONTNEED); e != 0 {
			return n, e
		}
		n += int(s.end - s.start)
	}
	return n, nil
}

type span struct{ start, end uintptr }

// releasable reads smaps and returns the mappings of the file exe that
// cannot be written and hold no anonymous (copied-on-write) pages, such as
// the relocated read-only data of a position-independent executable.
func releasable(r io.Reader, exe string) ([]span, error) {
	var out []span
	var cur *span // a candidate until its Anonymous line says 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") {
			// A mapping: address perms offset dev inode [path], the path
			// possibly holding spaces.
			cur = nil
			if len(fields) < 6 || strings.Join(fields[5:], " ") != exe || strings.ContainsRune(fields[1], 'w') {
				continue
			}
			lo, hi, _ := strings.Cut(fields[0], "-")
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil && start < end {
				cur = &span{uintptr(start), uintptr(end)}
			}
			continue
		}
		if cur != nil && fields[0] == "Anonymous:" {
			if len(fields) >= 2 && fields[1] == "0" {
				out = append(out, *cur)
			}
			cur = nil
		}
	}
	return out, sc.Err()
}
