package bodycopy

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
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

// TestCopyWaitsSmall: a full small read brings the large buffer for the
// next reads; partial large reads of bulk keep it; a read of no more than
// the small buffer's size gives it back, so the read that waits for the
// next message has the small one.
func TestCopyWaitsSmall(t *testing.T) {
	s := &script{
		// A message; a bulk burst whose reads come back part full (as
		// 16 KiB HTTP/2 frames do); a message; then the end.
		data:   make([]byte, 100+SmallSize+5*16384+100),
		chunks: []int{100, 1 << 30, 16384, 16384, 16384, 16384, 16384, 100},
	}
	if err := Copy(io.Discard, s, nil); err != nil {
		t.Fatal(err)
	}
	want := []int{SmallSize, SmallSize, LargeSize, LargeSize, LargeSize, LargeSize, LargeSize, LargeSize, SmallSize}
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
	// Bytes that come with an error are written before the error ends the
	// copy.
	var out bytes.Buffer
	if err := Copy(&out, io.MultiReader(strings.NewReader("last words"), failReader{}), nil); err == nil || out.String() != "last words" {
		t.Errorf("got %q, %v", out.String(), err)
	}
	out.Reset()
	if err := Copy(&out, &dataWithErr{}, nil); err == nil || err.Error() != "upstream reset" || out.String() != "tail" {
		t.Errorf("data with an error: got %q, %v", out.String(), err)
	}
}

// dataWithErr returns its bytes and an error from the same Read.
type dataWithErr struct{}

func (*dataWithErr) Read(p []byte) (int, error) {
	return copy(p, "tail"), errors.New("upstream reset")
}
