package httpguard

import (
	"io"
	"net"
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
