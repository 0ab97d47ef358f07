package upstream

import (
	"net/http"
	"net/http/httptrace"
	"strconv"

	"golang.org/x/net/http/httpguts"

	"github.com/weftmesh/weft/proxy/internal/h1wire"
)

// appendRequestHead appends the HTTP/1.1 head of r to b as Request.Write
// would write it for the requests h1Client sends inline (no
// Transfer-Encoding, no trailers, a body of known length or none), with the
// same field values: the Host line from r.Host or the URL, User-Agent only
// when set and not empty, Content-Length for a body and for POST, PUT and
// PATCH without one,
// "Connection: close" for r.Close, then the other fields without the ones
// net/http writes itself, invalid names dropped, CR and LF in values
// turned into spaces and values trimmed. Fields are not sorted: their
// order does not matter, and sorting them was a tenth of the request's
// cost in Request.Write.
//
// ok is false for what the fast path leaves to Request.Write, which
// handles or refuses it: CONNECT, an opaque URL, a Host that is not plain
// ASCII or not valid, a control character in the target, or a client
// trace that wants to see the fields written.
func appendRequestHead(b []byte, r *http.Request) (_ []byte, ok bool) {
	u := r.URL
	if r.Method == http.MethodConnect || u == nil || u.Opaque != "" {
		return b, false
	}
	if t := httptrace.ContextClientTrace(r.Context()); t != nil && (t.WroteHeaderField != nil || t.WroteRequest != nil) {
		return b, false
	}
	host := r.Host
	if host == "" {
		host = u.Host
	}
	if !plainHost(host) {
		return b, false
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if hasCTL(path) || hasCTL(u.RawQuery) {
		return b, false
	}
	start := len(b)
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, path...)
	if u.ForceQuery || u.RawQuery != "" {
		b = append(b, '?')
		b = append(b, u.RawQuery...)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	if ua, set := r.Header["User-Agent"]; !set {
		b = append(b, "User-Agent: Go-http-client/1.1\r\n"...)
	} else if len(ua) > 0 && ua[0] != "" {
		b = h1wire.AppendField(b, "User-Agent", ua[0])
	}
	if r.Close && !closeToken(r.Header["Connection"]) {
		b = append(b, "Connection: close\r\n"...)
	}
	n := int64(0)
	if r.Body != nil && r.Body != http.NoBody {
		n = r.ContentLength
	} else if r.ContentLength != 0 {
		return b[:start], false // Request.Write refuses it
	}
	if n > 0 || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, n, 10)
		b = append(b, "\r\n"...)
	}
	for k, vv := range r.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		for _, v := range vv {
			b = h1wire.AppendField(b, k, v)
		}
	}
	return append(b, "\r\n"...), true
}

// plainHost says that h is printable ASCII without a zone and a valid
// Host field value, which Request.Write would send unchanged.
func plainHost(h string) bool {
	for i := 0; i < len(h); i++ {
		if c := h[i]; c <= ' ' || c >= 0x7f || c == '%' {
			return false
		}
	}
	return httpguts.ValidHostHeader(h)
}

func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return true
		}
	}
	return false
}

// closeToken says whether a Connection field already asks to close, as
// net/http decides it: from its first value.
func closeToken(vv []string) bool {
	return len(vv) > 0 && h1wire.HasToken(vv[0], "close")
}
