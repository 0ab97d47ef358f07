package bodycopy

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// script is a reader that returns, for each Read, at most the next chunk
// size of its script (fewer when the buffer is smaller), and records the
// size of every buffer it was given.
type script struct {
	data   []byte
	chunks []int
	sizes  []int
}

func (s *script) Read(p []byte) (int, error) {
	s.sizes = append(s.sizes, len(p))
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	want := len(s.data)
	if len(s.chunks) > 0 {
		want = s.chunks[0]
		s.chunks = s.chunks[1:]
	}
	n := copy(p, s.data[:min(want, len(s.data))])
	s.data = s.data[n:]
	return n, nil
}

func TestCopyIsExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		data := make([]byte, r.IntN(300_000))
		for i := range data {
			data[i] = byte(r.IntN(256))
		}
		var chunks []int
		for range 200 {
			chunks = append(chunks, 1+r.IntN(70_000))
		}
		var out bytes.Buffer
		flushes := 0
		if err := Copy(&out, &script{data: data, chunks: chunks}, func() { flushes++ }); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("copied %d bytes, want %d, or different", out.Len(), len(data))
		}
		if len(data) > 0 && flushes == 0 {
			t.Fatal("never flushed")
		}
	}
}

// TestCopyWaitsSmall: the buffer given to the read that follows a partial
// read (the one that would wait for the next message) is the small one; a
// full small read brings the large buffer for the next read.
func TestCopyWaitsSmall(t *testing.T) {
	msg := 100
	bulk := 200_000
	s := &script{
		data: make([]byte, msg+bulk+msg),
		// A message; then a burst in which every read is filled; then
		// the burst's tail and another message.
		chunks: []int{msg, 1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30},
	}
	if err := Copy(io.Discard, s, nil); err != nil {
		t.Fatal(err)
	}
	want := []int{SmallSize, SmallSize}
	rest := msg + bulk + msg - msg - SmallSize
	for rest >= LargeSize {
		want = append(want, LargeSize)
		rest -= LargeSize
	}
	// The last partial large read, then the small one that finds EOF.
	want = append(want, LargeSize, SmallSize)
	if len(s.sizes) != len(want) {
		t.Fatalf("read buffer sizes %v, want %v", s.sizes, want)
	}
	for i := range want {
		if s.sizes[i] != want[i] {
			t.Fatalf("read buffer sizes %v, want %v", s.sizes, want)
		}
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("client gone") }

type failReader struct{}

func (failReader) Read([]byte) (int, error) { return 0, errors.New("upstream reset") }

func TestCopyErrors(t *testing.T) {
	if err := Copy(failWriter{}, bytes.NewReader([]byte("x")), nil); err == nil || err.Error() != "client gone" {
		t.Errorf("write error: %v", err)
	}
	if err := Copy(io.Discard, failReader{}, nil); err == nil || err.Error() != "upstream reset" {
		t.Errorf("read error: %v", err)
	}
}
