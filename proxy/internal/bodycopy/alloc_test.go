//go:build !race

// The race detector's sync.Pool drops items at random, so allocations are
// counted without it.

package bodycopy

import (
	"bytes"
	"io"
	"testing"
)

func TestCopyAllocatesNothing(t *testing.T) {
	data := make([]byte, 100_000)
	r := bytes.NewReader(data)
	Copy(io.Discard, r, nil) // warm the pools
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset(data)
		if err := Copy(io.Discard, r, nil); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("%v allocations per copy", allocs)
	}
}
