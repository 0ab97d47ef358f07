package h1wire

import (
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Fields is what ParseFields read from a head's field lines.
type Fields struct {
	Header http.Header
	Length int64 // the Content-Length, -1 without one
	Close  bool  // a Connection field lists "close"
}

// ParseFields reads the field lines of a head (s: each line ending in
// CRLF, then the empty line's CRLF) into a header as textproto's
// ReadMIMEHeader does: canonical names, values trimmed of spaces and tabs,
// in order. It is the proxy's fast path for plain heads, so ok is false for
// what it leaves to net/http: obs-fold, a name that is not a token, a
// control character but HTAB in a value, a Content-Length that is not 1 to
// 18 digits or not the only one, and any field that refuse (given the
// canonical name) refuses.
//
// Names and values are substrings of s, so s should be a copy of the head
// made once; the header then costs the map and one slice for all values.
func ParseFields(s string, refuse func(name string) bool) (f Fields, ok bool) {
	n := strings.Count(s, "\r\n") - 1
	f.Header = make(http.Header, n)
	f.Length = -1
	strs := make([]string, max(n, 0))
	for {
		line, rest, _ := strings.Cut(s, "\r\n")
		s = rest
		if line == "" {
			// As net/http's readers decide it (not as its writers do:
			// see HasToken).
			f.Close = httpguts.HeaderValuesContainsToken(f.Header["Connection"], "close")
			return f, true
		}
		k, v, found := strings.Cut(line, ":")
		if !found || !httpguts.ValidHeaderFieldName(k) || !ValidValue(v) {
			return f, false // obs-fold starts with a space: not a token
		}
		if !canonical(k) {
			k = textproto.CanonicalMIMEHeaderKey(k)
		}
		if refuse(k) {
			return f, false
		}
		v = strings.Trim(v, " \t")
		switch k {
		case "Content-Length":
			if f.Length >= 0 {
				return f, false
			}
			if f.Length, ok = ParseLength(v); !ok {
				return f, false
			}
		}
		if vv := f.Header[k]; vv == nil && len(strs) > 0 {
			vv, strs = strs[:1:1], strs[1:]
			vv[0] = v
			f.Header[k] = vv
		} else {
			f.Header[k] = append(vv, v)
		}
	}
}

// ValidValue says that v holds no control character but HTAB, textproto's
// rule for field values (in a start line it also keeps out a bare LF, at
// which net/http would end the line).
func ValidValue[T ~string | ~[]byte](v T) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// canonical says whether the valid field name k is already in textproto's
// canonical form.
func canonical(k string) bool {
	upper := true
	for i := 0; i < len(k); i++ {
		c := k[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return false
		}
		upper = c == '-'
	}
	return true
}

// ParseLength parses a Content-Length value of 1 to 18 digits.
func ParseLength[T ~string | ~[]byte](v T) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
