package sidecar

// growStack makes the calling goroutine's stack at least 8 KiB before the
// request goes deeper.
//
// Go's HTTP/2 server runs every stream's handler on a new goroutine, which
// starts with the runtime's adaptive starting stack (the average stack in
// use at the last collection, 4 KiB at the benchmark's load). Relaying a
// request through Go's HTTP/2 client needs between 4 and 8 KiB, so nearly
// every stream grew its stack once, deep in the client's select; growing
// copies the stack and walks every frame on it, decoding each frame's stack
// map, and that walk was 5 to 6% of the proxy's CPU for HTTP/2 and gRPC
// (perf, one hop at 1000 rps). Growing here, at the handler's first frame,
// walks the few frames of the server's own (perf: 2.4 to 2.6% of the CPU
// after), and the larger stack returns to the runtime's per-thread cache
// when the stream ends. A goroutine whose stack is already large enough
// only clears the frame.
//
// The 4 KiB frame takes a 2 or 4 KiB stack to 8 KiB in one step: the
// runtime doubles until the frame, its guard and what is in use fit.
//
// It is not inlined, and its frame is an array it indexes by its argument,
// so the compiler keeps the frame whatever the caller does with the result.
//
//go:noinline
func growStack(i int) byte {
	var frame [4 << 10]byte
	frame[i&(len(frame)-1)] = byte(i)
	return frame[(i+1)&(len(frame)-1)]
}
