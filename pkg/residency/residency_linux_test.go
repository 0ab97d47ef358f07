//go:build linux

package residency

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

const smaps = `00400000-00984000 r-xp 00000000 fd:01 42 /usr/local/bin/weft proxy
Size:               5648 kB
Rss:                4812 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
00984000-00f8c000 r--p 00584000 fd:01 42 /usr/local/bin/weft proxy
Size:               6176 kB
Anonymous:             0 kB
00f8c000-00f90000 r--p 00b8c000 fd:01 42 /usr/local/bin/weft proxy
Size:                 16 kB
Anonymous:            16 kB
00f90000-00ffa000 rw-p 00b90000 fd:01 42 /usr/local/bin/weft proxy
Size:                440 kB
Anonymous:           100 kB
01000000-01001000 rw-p 00000000 00:00 0
Anonymous:             0 kB
7f0000000000-7f0000001000 r--p 00000000 fd:01 43 /usr/lib/libc.so.6
Anonymous:             0 kB
7f0000002000-7f0000003000 r-xp 00000000 fd:01 42 /usr/local/bin/weft
Anonymous:             0 kB
7f0000004000-7f0000005000 r-xp 00000000 fd:01 42 /usr/local/bin/weft proxy
Rss:                   4 kB
`

// TestReleasable keeps to read-only mappings of the executable itself that
// hold no private copies: the relocated read-only page (Anonymous 16 kB),
// the data segment, anonymous memory, other files, a path that only starts
// like the executable's, and a mapping whose Anonymous line is missing are
// left alone.
func TestReleasable(t *testing.T) {
	got, err := releasable(strings.NewReader(smaps), "/usr/local/bin/weft proxy")
	if err != nil {
		t.Fatal(err)
	}
	want := []span{{0x400000, 0x984000}, {0x984000, 0xf8c000}}
	if len(got) != len(want) {
		t.Fatalf("got %x, want %x", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("span %d: got %x, want %x", i, got[i], want[i])
		}
	}
}

// TestReleaseExecutable releases this test binary's pages and checks that
// the code still runs and that fewer of the executable's pages are mapped.
func TestReleaseExecutable(t *testing.T) {
	before := exeRSS(t)
	n, err := ReleaseExecutable()
	if err != nil {
		t.Fatal(err)
	}
	after := exeRSS(t)
	if n == 0 {
		t.Fatal("released nothing")
	}
	if after >= before {
		t.Errorf("executable's resident pages: %d kB before, %d kB after releasing %d bytes", before, after, n)
	}
	// The released code faults back in.
	if strconv.Itoa(42) != "42" {
		t.Fatal("strconv")
	}
}

// exeRSS sums Rss over the executable's read-only mappings.
func exeRSS(t *testing.T) int {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	sum, in := 0, false
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if !strings.HasSuffix(f[0], ":") {
			in = len(f) >= 6 && strings.Join(f[5:], " ") == exe && !strings.Contains(f[1], "w")
			continue
		}
		if in && f[0] == "Rss:" {
			kb, _ := strconv.Atoi(f[1])
			sum += kb
		}
	}
	if sum == 0 {
		t.Fatalf("no resident read-only mapping of %s", exe)
	}
	return sum
}
