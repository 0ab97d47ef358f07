// Package detect decides, from the first bytes a client sends, whether a
// connection speaks HTTP/1.x, HTTP/2 (prior knowledge, the h2c preface) or
// something else that the proxy must forward as opaque bytes. It only peeks:
// every byte read stays available to whoever handles the connection next.
//
// It must not block forever on a server-first protocol: callers list those
// ports as opaque and never call Peek for them, and Peek gives up after a
// timeout.
package detect

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"os"
	"time"
)

// Kind is a detected protocol.
type Kind int

const (
	// NeedMore means the bytes so far do not decide.
	NeedMore Kind = iota
	HTTP1
	HTTP2
	Opaque
)

func (k Kind) String() string {
	switch k {
	case HTTP1:
		return "http1"
	case HTTP2:
		return "http2"
	case Opaque:
		return "opaque"
	}
	return "undecided"
}

// Preface is the HTTP/2 client connection preface (RFC 9113 §3.4).
const Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// maxMethod bounds the method token; real methods are short and a long run of
// letters is more likely some other protocol.
const maxMethod = 24

// Classify looks at a prefix of the stream. It answers NeedMore only while a
// longer prefix could still change the answer.
func Classify(b []byte) Kind {
	if len(b) == 0 {
		return NeedMore
	}
	n := min(len(b), len(Preface))
	if string(b[:n]) == Preface[:n] {
		if n == len(Preface) {
			return HTTP2
		}
		return NeedMore
	}
	// Request line: method SP request-target SP HTTP/1.x CRLF.
	sp := -1
	for i, c := range b {
		if c == ' ' {
			sp = i
			break
		}
		if c < 'A' || c > 'Z' || i >= maxMethod {
			return Opaque
		}
	}
	if sp <= 0 {
		return NeedMore
	}
	nl := bytes.IndexByte(b[sp:], '\n')
	if nl < 0 {
		if bytes.ContainsAny(b[sp+1:], "\r\x00") {
			return Opaque
		}
		return NeedMore
	}
	line := bytes.TrimSuffix(b[sp:sp+nl], []byte("\r"))
	if bytes.HasSuffix(line, []byte(" HTTP/1.1")) || bytes.HasSuffix(line, []byte(" HTTP/1.0")) {
		return HTTP1
	}
	return Opaque
}

// Peek reads from c through br until Classify decides, the buffer is full
// (Opaque), the client is silent for timeout (Opaque), or the client closes
// (Opaque: forward what arrived). The read deadline is cleared on return.
func Peek(c net.Conn, br *bufio.Reader, timeout time.Duration) (Kind, error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return Opaque, err
	}
	defer c.SetReadDeadline(time.Time{})
	for {
		n := br.Buffered()
		b, _ := br.Peek(n)
		if k := Classify(b); k != NeedMore {
			return k, nil
		}
		if n >= br.Size() {
			return Opaque, nil
		}
		if _, err := br.Peek(n + 1); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, bufio.ErrBufferFull) {
				return Opaque, nil
			}
			if br.Buffered() > 0 {
				return Opaque, nil
			}
			return Opaque, err
		}
	}
}
