package httpguard

import (
	"strings"
	"unicode/utf8"
)

// NormalizePath returns the one canonical spelling of an origin-form path
// (no query). The canonical form:
//
//   - '\' is '/', repeated slashes are merged, "." and ".." segments are
//     resolved (".." never climbs above the root);
//   - percent-encoded unreserved characters (ALPHA DIGIT - . _ ~) are decoded,
//     so "%2e%2E" is "..", and every other escape is kept with upper-case hex;
//   - characters that may not appear raw in a path are percent-encoded;
//   - a fragment ('#' and after) is dropped.
//
// It refuses (never guesses): an encoded '/' or '\' (%2F, %5C), an invalid
// escape, NUL, CR, LF and every other control character or space, raw or
// encoded, bytes that do not decode to valid UTF-8 (overlong forms such as
// %C0%AE included), "." or ".." segments carrying ";params", which servlet
// containers resolve as dot segments, and segments that are only ";params",
// which they merge away. The result is idempotent:
// NormalizePath(NormalizePath(p)) == NormalizePath(p).
func NormalizePath(raw string) (string, error) {
	if i := strings.IndexByte(raw, '#'); i >= 0 {
		raw = raw[:i]
	}
	if raw == "" || (raw[0] != '/' && raw[0] != '\\') {
		return "", ErrNotAbsolute
	}
	if canonical(raw) {
		return raw, nil
	}
	var b strings.Builder
	b.Grow(len(raw) + 8)
	var dec []byte // decoded bytes of the path, for the UTF-8 check
	hasHigh := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '%':
			if i+2 >= len(raw) {
				return "", ErrBadEncoding
			}
			h, ok1 := unhex(raw[i+1])
			l, ok2 := unhex(raw[i+2])
			if !ok1 || !ok2 {
				return "", ErrBadEncoding
			}
			i += 2
			d := h<<4 | l
			switch {
			case d < 0x20 || d == 0x7f:
				return "", ErrControlChar
			case d == '/' || d == '\\':
				return "", ErrEncodedSlash
			case unreserved(d):
				b.WriteByte(d)
			default:
				writeEscape(&b, d)
			}
			if d >= 0x80 {
				hasHigh = true
			}
			dec = append(dec, d)
		case c == '\\':
			b.WriteByte('/')
			dec = append(dec, '/')
		case c <= ' ' || c == 0x7f:
			return "", ErrControlChar
		case c >= 0x80:
			hasHigh = true
			writeEscape(&b, c)
			dec = append(dec, c)
		case pathChar(c):
			b.WriteByte(c)
			dec = append(dec, c)
		default:
			writeEscape(&b, c)
			dec = append(dec, c)
		}
	}
	if hasHigh && !utf8.Valid(dec) {
		return "", ErrInvalidUTF8
	}
	return resolveDots(b.String())
}

// canonical is the fast path: a path that NormalizePath would return
// unchanged is returned without allocating.
func canonical(p string) bool {
	prev := byte(0)
	segStart := 0
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !pathChar(c) || (c == '/' && prev == '/') {
			return false
		}
		if c == '/' {
			if i > 0 && dotSegment(p[segStart:i]) {
				return false
			}
			segStart = i + 1
		}
		prev = c
	}
	return !dotSegment(p[segStart:])
}

// dotSegment is a segment that NormalizePath resolves or refuses.
func dotSegment(s string) bool {
	return s == "." || s == ".." || strings.HasPrefix(s, ".;") || strings.HasPrefix(s, "..;") || strings.HasPrefix(s, ";")
}

func resolveDots(p string) (string, error) {
	segs := strings.Split(p, "/")
	out := make([]string, 0, len(segs))
	trailing := false
	for i, s := range segs {
		last := i == len(segs)-1
		switch {
		case s == "" || s == ".":
			trailing = last && i > 0
		case s == "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = last
		case strings.HasPrefix(s, ".;") || strings.HasPrefix(s, "..;"):
			return "", ErrDotParams
		case s[0] == ';':
			// Servlet containers drop ";params", leaving an empty segment
			// that they then merge: "/;x/admin" is "/admin" to them.
			return "", ErrEmptyParams
		default:
			out = append(out, s)
			trailing = false
		}
	}
	if len(out) == 0 {
		return "/", nil
	}
	r := "/" + strings.Join(out, "/")
	if trailing {
		r += "/"
	}
	return r, nil
}

// pathChar: unreserved, sub-delims, ':', '@' and '/' may appear raw.
func pathChar(c byte) bool {
	if unreserved(c) {
		return true
	}
	switch c {
	case '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '@', '/':
		return true
	}
	return false
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

const upperHex = "0123456789ABCDEF"

func writeEscape(b *strings.Builder, c byte) {
	b.WriteByte('%')
	b.WriteByte(upperHex[c>>4])
	b.WriteByte(upperHex[c&15])
}

// ValidToken reports whether s is an RFC 9110 token (a method or a header
// name).
func ValidToken[T ~string | ~[]byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenChar(s[i]) {
			return false
		}
	}
	return true
}

func tokenChar(c byte) bool {
	if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}
