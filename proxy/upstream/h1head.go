package upstream

import (
	"bufio"
	"bytes"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"

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

// readFinalHead reads a response head from br without net/http when it is a
// plain one: its whole head already buffered, and parseResponseHead takes
// it. ok false leaves br untouched for http.ReadResponse.
func readFinalHead(br *bufio.Reader, req *http.Request) (resp *http.Response, ok bool) {
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return nil, false
	}
	if resp, ok = parseResponseHead(buf[:end+4], req.Method); !ok {
		return nil, false
	}
	br.Discard(end + 4)
	resp.Request = req
	return resp, true
}

// parseResponseHead parses head (status line, fields, empty line) as
// http.ReadResponse would, for the responses nearly every upstream sends: a
// final HTTP/1.1 status other than 204 and 304, to a request other than
// HEAD, with one Content-Length and no Transfer-Encoding, Trailer or Pragma
// field, no obs-fold and nothing ReadResponse refuses. Anything else is
// left to ReadResponse (ok false). The body is the caller's: resp.Body is
// nil, or http.NoBody when the length is 0.
//
// It allocates a copy of the head, whose substrings are the field names
// and values, one slice for the values, the map and the Response.
// ReadResponse also made a string of the status line and of each value, and
// two readers for the body.
func parseResponseHead(head []byte, method string) (resp *http.Response, ok bool) {
	if method == http.MethodHead {
		return nil, false
	}
	s := string(head)
	line, rest, _ := strings.Cut(s, "\r\n")
	if len(line) < 12 || line[:9] != "HTTP/1.1 " || len(line) > 12 && line[12] != ' ' || !h1wire.ValidValue(line) {
		return nil, false
	}
	code := 0
	for _, c := range []byte(line[9:12]) {
		if c < '0' || c > '9' {
			return nil, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		return nil, false
	}
	status := line[9:]
	f, ok := h1wire.ParseFields(rest, refuseInResponse)
	if !ok || f.Length < 0 {
		return nil, false // no length: read to the end, ReadResponse's
	}
	if f.Close {
		delete(f.Header, "Connection") // as ReadResponse does
	}
	resp = &http.Response{
		Status: status, StatusCode: code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: f.Header, ContentLength: f.Length, Close: f.Close,
	}
	if f.Length == 0 {
		resp.Body = http.NoBody
	}
	return resp, true
}

// refuseInResponse names the fields whose meaning ReadResponse applies
// (other framings, trailers, Pragma's Cache-Control).
func refuseInResponse(k string) bool {
	switch k {
	case "Transfer-Encoding", "Trailer", "Pragma":
		return true
	}
	return false
}
