package detect

import (
	"bufio"
	"net"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Kind
	}{
		{"empty", "", NeedMore},
		{"get", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", HTTP1},
		{"http10 bare LF", "POST /a?b=c HTTP/1.0\n", HTTP1},
		{"partial method", "GE", NeedMore},
		{"partial line", "GET /long/path", NeedMore},
		{"h2 preface", Preface, HTTP2},
		{"h2 partial preface", Preface[:10], NeedMore},
		{"PRI but not preface", "PRI * HTTP/1.1\r\n", HTTP1},
		{"tls client hello", "\x16\x03\x01\x02\x00\x01", Opaque},
		{"lowercase", "get / HTTP/1.1\r\n", Opaque},
		{"http3 version", "GET / HTTP/3\r\n", Opaque},
		{"redis", "*1\r\n$4\r\nPING\r\n", Opaque},
		{"long token", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", Opaque},
		{"CR before newline in target", "GET /\r", Opaque},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify([]byte(tc.in)); got != tc.want {
				t.Errorf("Classify(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzClassify(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add([]byte(Preface))
	f.Fuzz(func(t *testing.T, b []byte) {
		k := Classify(b)
		// A decision never changes when more bytes arrive.
		if k != NeedMore {
			if k2 := Classify(append(b[:len(b):len(b)], 'x')); k2 != k {
				t.Fatalf("Classify(%q)=%v but with one more byte %v", b, k, k2)
			}
		}
	})
}

func TestPeek(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string
		close  bool
		want   Kind
	}{
		{"http1 in pieces", []string{"GET / HT", "TP/1.1\r\n\r\n"}, false, HTTP1},
		{"h2 preface in pieces", []string{Preface[:5], Preface[5:]}, false, HTTP2},
		{"silent client times out as opaque", nil, false, Opaque},
		{"client sends partial then closes", []string{"GET /"}, true, Opaque},
		{"binary", []string{"\x00\x01\x02"}, false, Opaque},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			go func() {
				for _, c := range tc.chunks {
					b.Write([]byte(c))
				}
				if tc.close {
					b.Close()
				}
			}()
			defer b.Close()
			br := bufio.NewReaderSize(a, 4096)
			got, _ := Peek(a, br, 200*time.Millisecond)
			if got != tc.want {
				t.Fatalf("Peek = %v, want %v", got, tc.want)
			}
			// Nothing consumed: all bytes still readable.
			want := ""
			for _, c := range tc.chunks {
				want += c
			}
			if got, _ := br.Peek(br.Buffered()); len(want) > 0 && string(got) != want {
				t.Errorf("buffered %q, want %q", got, want)
			}
		})
	}
}
