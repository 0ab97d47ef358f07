package httpguard

import (
	"bytes"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
)

// FuzzNormalizePath: the canonical form is idempotent, is accepted by
// net/url as an escaped path of itself (what is forwarded is exactly what
// was authorized), and never holds a dot segment, "//", "\", %2F or a
// control character.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "/%2e%2E/admin", "/a%2fb", `\a\b`, "/%c0%ae", "/a;b/..;/c", "/caf%C3%A9", "/a#b", "//x//y", "/%7E%41"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := NormalizePath(in)
		if err != nil {
			return
		}
		again, err := NormalizePath(out)
		if err != nil || again != out {
			t.Fatalf("not idempotent: %q → %q → %q, %v", in, out, again, err)
		}
		if !strings.HasPrefix(out, "/") || strings.Contains(out, "//") || strings.ContainsAny(out, "\\#? \x00\r\n") {
			t.Fatalf("%q → %q", in, out)
		}
		up := strings.ToUpper(out)
		if strings.Contains(up, "%2F") || strings.Contains(up, "%5C") {
			t.Fatalf("%q → %q keeps an encoded slash", in, out)
		}
		for s := range strings.SplitSeq(out, "/") {
			if dotSegment(s) {
				t.Fatalf("%q → %q keeps dot segment %q", in, out, s)
			}
		}
		dec, err := url.PathUnescape(out)
		if err != nil {
			t.Fatalf("%q → %q does not unescape: %v", in, out, err)
		}
		u := &url.URL{Path: dec, RawPath: out}
		if got := u.EscapedPath(); got != out {
			t.Fatalf("%q → %q is forwarded as %q", in, out, got)
		}
	})
}

// FuzzH1Conn: whatever a client sends, the guard either passes it through
// unchanged or passes a prefix of whole checked messages followed by the
// refusal marker; it never panics or invents bytes.
func FuzzH1Conn(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n x\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		go func() {
			a.Write(in)
			a.Close()
		}()
		g := NewH1Conn(b, nil)
		var rejected bool
		g.OnReject = func(error) { rejected = true }
		out, _ := io.ReadAll(g)
		b.Close()
		if rejected {
			out = bytes.TrimSuffix(out, []byte(rejectHead))
		}
		// Dropped empty lines between messages are the only difference.
		if !bytes.Contains(in, out) && !subsequence(out, in) {
			t.Fatalf("guard invented bytes:\nin  %q\nout %q", in, out)
		}
	})
}

func subsequence(sub, s []byte) bool {
	i := 0
	for _, c := range s {
		if i < len(sub) && sub[i] == c {
			i++
		}
	}
	return i == len(sub)
}
