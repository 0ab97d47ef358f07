package route

import (
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

// applyHeaders is HTTPHeaderFilter: set overwrites, add appends, remove
// deletes; names are case-insensitive. The spec gives no order among the
// three; we apply set, add, then remove so that a remove always wins.
func applyHeaders(h http.Header, m *meshconfig.HeaderModifier) {
	if m == nil {
		return
	}
	for _, s := range m.Set {
		h.Set(s.Name, s.Value)
	}
	for _, a := range m.Add {
		h.Add(a.Name, a.Value)
	}
	for _, r := range m.Remove {
		h.Del(r)
	}
}

// modifyPath applies an HTTPPathModifier to path. prefix is the normalised
// PathPrefix that matched (ReplacePrefixMatch only makes sense after one);
// ok is false when the modifier cannot apply.
//
// ReplacePrefixMatch follows the table in the Gateway API HTTPPathModifier
// documentation: the matched prefix is replaced element-wise, so prefix
// "/foo" with "/xyz" turns "/foo/bar" into "/xyz/bar", and "/" turns it into
// "/bar"; a request equal to the prefix becomes the replacement as written.
func modifyPath(path string, m *meshconfig.PathModifier, e *entry) (string, bool) {
	switch m.Type {
	case meshconfig.ReplaceFullPath:
		return m.Value, true
	case meshconfig.ReplacePrefixMatch:
		if e == nil || e.kind != pathPrefix || !prefixMatches(e.path, path) {
			return path, false
		}
		rest := path[len(e.path):]
		if rest == "" {
			if m.Value == "" {
				return "/", true
			}
			return m.Value, true
		}
		out := strings.TrimRight(m.Value, "/") + rest
		if out == "" {
			out = "/"
		}
		return out, true
	}
	return path, false
}

// redirectLocation builds the Location of an HTTPRequestRedirectFilter.
// Unset fields keep the request's values. The port follows the spec: an
// explicit port wins; otherwise a new scheme implies its well-known port, and
// no scheme keeps the listener's port (for a mesh, the service port). The
// well-known port of the resulting scheme is left out of the URL.
func (t *Table) redirectLocation(r *http.Request, rd *meshconfig.Redirect, e *entry) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	port := int(t.port)
	if rd.Scheme != "" {
		scheme = strings.ToLower(rd.Scheme)
		port = wellKnownPort(scheme)
	}
	if rd.Port != 0 {
		port = int(rd.Port)
	}
	host := stripPort(r.Host)
	if rd.Hostname != "" {
		host = rd.Hostname
	}
	if port != 0 && port != wellKnownPort(scheme) {
		host = net.JoinHostPort(host, strconv.Itoa(port))
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]" // a bare IPv6 literal
	}
	path := r.URL.Path
	if rd.Path != nil {
		if p, ok := modifyPath(path, rd.Path, e); ok {
			path = p
		}
	}
	u := url.URL{Scheme: scheme, Host: host, Path: path, RawQuery: r.URL.RawQuery}
	return u.String()
}

func wellKnownPort(scheme string) int {
	switch scheme {
	case "http":
		return 80
	case "https":
		return 443
	}
	return 0
}

// redirectStatus defaults to 302, as HTTPRequestRedirectFilter.StatusCode.
func redirectStatus(rd *meshconfig.Redirect) int {
	if rd.StatusCode == 0 {
		return http.StatusFound
	}
	return rd.StatusCode
}

// hopHeaders are connection-scoped (RFC 9110 §7.6.1) and never forwarded.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopHeaders strips connection-scoped headers, including those the
// Connection header names. "TE: trailers" survives on requests: gRPC needs it.
func removeHopHeaders(h http.Header, request bool) {
	for _, f := range h.Values("Connection") {
		for name := range strings.SplitSeq(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	keepTE := request && teTrailers(h)
	for _, k := range hopHeaders {
		h.Del(k)
	}
	if keepTE {
		h.Set("Te", "trailers")
	}
}

func teTrailers(h http.Header) bool {
	for _, v := range h.Values("Te") {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "trailers") {
				return true
			}
		}
	}
	return false
}
