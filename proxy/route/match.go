package route

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

// Match primitives. Everything here runs per request and must not allocate
// in the common case: values are compared in place, query strings scanned
// without being parsed into a map.

type pathKind uint8

// The order of the kinds is their precedence (see precedence.go).
const (
	pathExact pathKind = iota
	pathRegex
	pathPrefix
)

// valueMatch is a compiled header or query parameter condition.
type valueMatch struct {
	name  string // canonical header key, or query parameter name as written
	exact string
	re    *regexp.Regexp // nil for Exact
}

// compileRegex anchors a Gateway API RegularExpression: the spec leaves the
// dialect to the implementation (RE2 here) and conformance tests expect the
// whole value to match, as Envoy does.
func compileRegex(v string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + v + `)$`)
}

func compileValues(vs []meshconfig.ValueMatch, header bool) ([]valueMatch, error) {
	out := make([]valueMatch, 0, len(vs))
	seen := make(map[string]bool, len(vs))
	for _, v := range vs {
		name := v.Name
		if header {
			// Header names are case-insensitive (HTTPHeaderMatch.Name); Go's
			// server stores them canonicalised.
			name = http.CanonicalHeaderKey(name)
		}
		// HTTPHeaderMatch / HTTPQueryParamMatch: "If multiple entries specify
		// equivalent ... names, only the first entry with an equivalent name
		// MUST be considered for a match."
		if seen[name] {
			continue
		}
		seen[name] = true
		m := valueMatch{name: name}
		switch v.Type {
		case meshconfig.MatchExact, "":
			m.exact = v.Value
		case meshconfig.MatchRegex:
			re, err := compileRegex(v.Value)
			if err != nil {
				return nil, err
			}
			m.re = re
		default:
			return nil, errUnsupportedMatch(v.Type)
		}
		out = append(out, m)
	}
	return out, nil
}

// headerMatches applies one header condition. A repeated header is compared
// as its values joined with ", ", as RFC 9110 §5.3 says a recipient may
// combine them (HTTPHeaderMatch defers to that RFC).
func (m *valueMatch) headerMatches(h http.Header) bool {
	vs, ok := h[m.name]
	if !ok || len(vs) == 0 {
		return false
	}
	if m.re == nil {
		if len(vs) == 1 {
			return vs[0] == m.exact
		}
		return joinedEquals(vs, m.exact)
	}
	if len(vs) == 1 {
		return m.re.MatchString(vs[0])
	}
	return m.re.MatchString(strings.Join(vs, ", "))
}

// joinedEquals reports whether strings.Join(vs, ", ") == want without
// building the joined string.
func joinedEquals(vs []string, want string) bool {
	for i, v := range vs {
		if i > 0 {
			if !strings.HasPrefix(want, ", ") {
				return false
			}
			want = want[2:]
		}
		if !strings.HasPrefix(want, v) {
			return false
		}
		want = want[len(v):]
	}
	return want == ""
}

// queryMatches applies one query parameter condition to the first occurrence
// of the parameter: Gateway API leaves repeated parameters undefined and
// recommends matching the first value.
func (m *valueMatch) queryMatches(rawQuery string) bool {
	q := rawQuery
	for q != "" {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		key, val, _ := strings.Cut(pair, "=")
		if !unescapedEquals(key, m.name) {
			continue
		}
		if m.re == nil {
			return unescapedEquals(val, m.exact)
		}
		if strings.ContainsAny(val, "%+") {
			u, err := url.QueryUnescape(val)
			if err != nil {
				return false
			}
			val = u
		}
		return m.re.MatchString(val)
	}
	return false
}

// unescapedEquals reports whether the query-escaped s decodes to want, as
// url.QueryUnescape would decode it, without allocating. A malformed escape
// never matches.
func unescapedEquals(s, want string) bool {
	j := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '+':
			c = ' '
		case '%':
			if i+2 >= len(s) {
				return false
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return false
			}
			c = hi<<4 | lo
			i += 2
		}
		if j >= len(want) || want[j] != c {
			return false
		}
		j++
	}
	return j == len(want)
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

// normalizePrefix drops a trailing "/": HTTPPathMatch PathPrefix says "a
// trailing / is ignored", so "/foo/" and "/foo" are the same prefix and "/"
// is the empty prefix that matches everything.
func normalizePrefix(p string) string {
	return strings.TrimRight(p, "/")
}

// prefixMatches is the segment-wise PathPrefix test: "/foo" matches "/foo"
// and "/foo/bar" but not "/foobar" (HTTPPathMatch: "matching is done on a
// path element by element basis"). prefix is normalised.
func prefixMatches(prefix, path string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}

// hostMatch is one of a route's hostnames.
type hostMatch struct {
	name     string // lower case; for a wildcard the suffix after "*"
	wildcard bool
}

func compileHosts(hs []string) []hostMatch {
	out := make([]hostMatch, 0, len(hs))
	for _, h := range hs {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if rest, ok := strings.CutPrefix(h, "*"); ok {
			// "*.example.com" matches one or more labels before
			// ".example.com", never "example.com" itself (Gateway API
			// Hostname).
			out = append(out, hostMatch{name: rest, wildcard: true})
			continue
		}
		out = append(out, hostMatch{name: h})
	}
	return out
}

// hostMatches compares the request's Host, without its port, case-insensitively.
func hostMatches(hosts []hostMatch, host string) bool {
	host = stripPort(host)
	host = strings.TrimSuffix(host, ".")
	for i := range hosts {
		h := &hosts[i]
		if !h.wildcard {
			if strings.EqualFold(host, h.name) {
				return true
			}
			continue
		}
		if len(host) > len(h.name) && strings.EqualFold(host[len(host)-len(h.name):], h.name) {
			return true
		}
	}
	return false
}

func stripPort(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 || i < strings.LastIndexByte(host, ']') {
		return host
	}
	host = host[:i]
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	return host
}

type errUnsupportedMatch meshconfig.MatchType

func (e errUnsupportedMatch) Error() string {
	return "unsupported match type " + string(e)
}
