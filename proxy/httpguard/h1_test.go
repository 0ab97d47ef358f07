package httpguard

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
)

// trickle feeds s to a guard one byte per write and returns what the
// server side would read, and the refusal if any.
func trickle(t *testing.T, s string) (string, error) {
	a, b := net.Pipe()
	go func() {
		for i := range len(s) {
			if _, err := a.Write([]byte{s[i]}); err != nil {
				return
			}
		}
		a.Close()
	}()
	g := NewH1Conn(b, nil)
	var rejected error
	g.OnReject = func(err error) { rejected = err }
	out, _ := io.ReadAll(g)
	b.Close()
	return string(out), rejected
}

func TestH1ConnTrickledHead(t *testing.T) {
	req := "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" +
		"\r\nGET /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-T: v\r\n\r\n"
	out, err := trickle(t, req)
	want := "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" +
		"GET /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-T: v\r\n\r\n"
	if err != nil || out != want {
		t.Errorf("got %q, %v", out, err)
	}
	// A bare LF in a later line is found before the head ends.
	out, err = trickle(t, "GET / HTTP/1.1\r\nHost: a\r\nX: y\nZ: w\n\n")
	if err != ErrBareLF || out != rejectHead {
		t.Errorf("bare LF: %q, %v", out, err)
	}
}

// randomConn hands out data in reads of random sizes.
type randomConn struct {
	net.Conn
	data []byte
	rng  *rand.Rand
}

func (c *randomConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(1+c.rng.IntN(3000), len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// randomRequest appends a valid request: a head of up to about 9 KiB (more
// than the guard's pooled buffer), then no body, a body of known length,
// or a chunked body with or without trailers.
func randomRequest(b *bytes.Buffer, rng *rand.Rand) {
	fmt.Fprintf(b, "POST /p/%d?q=%d HTTP/1.1\r\nHost: h%d.example\r\n", rng.IntN(1000), rng.IntN(1000), rng.IntN(10))
	for i := range rng.IntN(12) {
		fmt.Fprintf(b, "X-F%d: %s\r\n", i, strings.Repeat("v", rng.IntN(900)))
	}
	body := func(n int) string { return strings.Repeat(string(rune('a'+rng.IntN(26))), n) }
	switch rng.IntN(3) {
	case 0:
		b.WriteString("\r\n")
	case 1:
		n := rng.IntN(5000)
		fmt.Fprintf(b, "Content-Length: %d\r\n\r\n%s", n, body(n))
	case 2:
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		for range rng.IntN(4) {
			n := 1 + rng.IntN(3000)
			fmt.Fprintf(b, "%x\r\n%s\r\n", n, body(n))
		}
		b.WriteString("0\r\n")
		if rng.IntN(2) == 0 {
			b.WriteString("X-Trailer: t\r\n")
		}
		b.WriteString("\r\n")
	}
}

// Valid pipelined requests of every framing pass through the guard byte
// for byte, whatever the sizes of the reads on either side and whatever
// detection already read: the offsets into the pooled buffer, its growth
// and its compaction lose, repeat and reorder nothing.
func TestH1ConnPassesRequestsExactly(t *testing.T) {
	for seed := range 100 {
		rng := rand.New(rand.NewPCG(uint64(seed), 1))
		var in bytes.Buffer
		for range 20 {
			randomRequest(&in, rng)
		}
		all := in.Bytes()
		k := rng.IntN(200)
		g := NewH1Conn(&randomConn{data: all[k:], rng: rng}, append([]byte(nil), all[:k]...))
		var rejected error
		g.OnReject = func(err error) { rejected = err }
		var out []byte
		buf := make([]byte, 1+rng.IntN(8192))
		for {
			n, err := g.Read(buf[:1+rng.IntN(len(buf))])
			out = append(out, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
		}
		if rejected != nil || !bytes.Equal(out, all) {
			t.Fatalf("seed %d: refused %v, %d of %d bytes passed, equal %v", seed, rejected, len(out), len(all), bytes.Equal(out, all))
		}
	}
}
