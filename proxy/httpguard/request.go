package httpguard

import (
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Checked is what Check learned about a request.
type Checked struct {
	// Path is the canonical path ("*" for OPTIONS *).
	Path string
	// StrippedH2C is true when an "Upgrade: h2c" was removed.
	StrippedH2C bool
	// Upgrade is true for an HTTP/1 upgrade request (WebSocket, h2c...):
	// unless it is answered 101 the connection must close after it.
	Upgrade bool
}

// Check validates a request that net/http parsed and rewrites it in place to
// the canonical form that is both authorized and forwarded: URL.Path,
// URL.RawPath and RequestURI become the canonical path, a fragment is
// dropped, an h2c upgrade is removed. On error nothing must be forwarded.
func Check(r *http.Request) (Checked, error) {
	var out Checked
	if !ValidToken(r.Method) {
		return out, ErrBadMethod
	}
	if r.Method == http.MethodConnect {
		return out, ErrConnect
	}
	target := r.RequestURI
	if target == "" {
		target = r.URL.RequestURI()
	}
	if i := strings.IndexByte(target, '#'); i >= 0 {
		target = target[:i]
	}
	if target == "*" {
		if r.Method != http.MethodOptions {
			return out, ErrBadTarget
		}
		out.Path = "*"
		return out, checkHost(r)
	}
	if !strings.HasPrefix(target, "/") {
		// Absolute form: net/http already took the authority into r.Host;
		// the path is cut out of the raw bytes, never re-encoded.
		scheme, rest, ok := strings.Cut(target, "://")
		if !ok || !(strings.EqualFold(scheme, "http") || strings.EqualFold(scheme, "https")) {
			return out, ErrBadTarget
		}
		i := strings.IndexAny(rest, "/?")
		if i < 0 {
			target = "/"
		} else {
			target = rest[i:]
			if target[0] == '?' {
				target = "/" + target
			}
		}
	}
	rawPath, query, hasQuery := strings.Cut(target, "?")
	for i := 0; i < len(query); i++ {
		if c := query[i]; c <= ' ' || c == 0x7f {
			return out, ErrControlChar
		}
	}
	p, err := NormalizePath(rawPath)
	if err != nil {
		return out, err
	}
	if err := checkHost(r); err != nil {
		return out, err
	}
	dec, err := url.PathUnescape(p)
	if err != nil {
		return out, ErrBadEncoding
	}
	r.URL.Path, r.URL.RawPath = dec, p
	r.URL.RawQuery, r.URL.ForceQuery, r.URL.Fragment, r.URL.RawFragment = query, hasQuery && query == "", "", ""
	r.RequestURI = p
	if hasQuery {
		r.RequestURI += "?" + query
	}
	out.Path = p
	// Computed before stripping: the HTTP/1 head reader stops checking after
	// any upgrade request, so the connection must end unless it switched.
	out.Upgrade = r.ProtoMajor == 1 && headerHasToken(r.Header, "Connection", "upgrade") && slices.ContainsFunc(r.Header.Values("Upgrade"), func(v string) bool { return v != "" })
	out.StrippedH2C = stripH2C(r.Header)
	return out, nil
}

// checkHost refuses a Host that is not a host[:port], and an HTTP/2 request
// whose Host header disagrees with :authority (RFC 9113 §8.3.1: the app
// might read either).
func checkHost(r *http.Request) error {
	if r.Host != "" && !validHost(r.Host) {
		return ErrHost
	}
	hs := r.Header.Values("Host")
	if len(hs) > 1 {
		return ErrHost
	}
	if len(hs) == 1 && CanonicalHost(hs[0]) != CanonicalHost(r.Host) {
		return ErrHostMismatch
	}
	return nil
}

func validHost[T ~string | ~[]byte](h T) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"#%/<>?@\\^`{|}", c) >= 0 {
			return false
		}
	}
	return true
}

// CanonicalHost is the form in which hosts compare: lower case, without a
// trailing dot and without the default port (80; 443 is not default between
// proxies that speak plaintext HTTP inside mTLS, but a client may still
// write it, so both are dropped).
func CanonicalHost(h string) string {
	host, port, err := net.SplitHostPort(h)
	if err != nil {
		host, port = h, ""
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if port == "" || port == "80" || port == "443" {
		return host
	}
	return net.JoinHostPort(host, port)
}

// stripH2C removes an h2c upgrade: forwarded, it would let the application
// switch the connection to HTTP/2 behind the proxy's back, and every later
// request on it would skip authorization (the h2c smuggling attack).
func stripH2C(h http.Header) bool {
	if !headerHasToken(h, "Upgrade", "h2c") {
		return false
	}
	h.Del("Upgrade")
	h.Del("Http2-Settings")
	var keep []string
	for _, v := range h.Values("Connection") {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if t != "" && !strings.EqualFold(t, "upgrade") && !strings.EqualFold(t, "http2-settings") {
				keep = append(keep, t)
			}
		}
	}
	h.Del("Connection")
	if len(keep) > 0 {
		h.Set("Connection", strings.Join(keep, ", "))
	}
	return true
}

// headerHasToken looks at every line of name and every comma-separated
// element, so that splitting a value across lines changes nothing.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if i := strings.IndexByte(t, '/'); i >= 0 && !strings.Contains(token, "/") {
				t = t[:i] // "h2c/1" style versions
			}
			if strings.EqualFold(t, token) {
				return true
			}
		}
	}
	return false
}
