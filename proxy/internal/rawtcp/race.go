//go:build race

package rawtcp

import (
	"runtime"
	"unsafe"
)

// ioSync stands for the ordering that data passed through a socket gives,
// as package syscall tells the race detector for its own reads and writes:
// what a goroutine did before a write happens before what the reader does
// after reading it. It is this package's own (syscall's is unexported), so
// the detector does not see that ordering between a wrapped socket and a
// plain one in the same process: under -race only, that could report a race
// that the data's passage through the kernel in fact orders.
var ioSync int64

func raceRead(b []byte, n int) {
	if n > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&b[0]), n)
	}
	runtime.RaceAcquire(unsafe.Pointer(&ioSync))
}

func raceWrite(b []byte) {
	runtime.RaceReleaseMerge(unsafe.Pointer(&ioSync))
	if len(b) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&b[0]), len(b))
	}
}
