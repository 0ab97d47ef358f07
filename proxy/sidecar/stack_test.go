package sidecar

import "testing"

// growStack's frame must stay on the stack: if it escaped, every HTTP/2
// request would allocate 4 KiB on the heap instead of growing the stack.
func TestGrowStackDoesNotAllocate(t *testing.T) {
	for i := range 3 {
		growStack(i)
	}
	if n := testing.AllocsPerRun(100, func() { growStack(7) }); n != 0 {
		t.Fatalf("growStack allocates %v times per call, want 0", n)
	}
}
