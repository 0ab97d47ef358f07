package sidecar

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"
	"sync"

	"github.com/weftmesh/weft/proxy/internal/bodycopy"
)

// relay is the proxy's reverse proxy. It forwards a request the way
// httputil.ReverseProxy with a Rewrite function does (hop-by-hop and
// X-Forwarded headers removed, Host kept, 1xx responses, trailers, bodies of
// unknown length flushed as they arrive, a broken response aborts the
// handler) but without ReverseProxy's per-request copies: the outgoing
// request reuses the incoming one's header map, which the handler owns and
// nothing reads after it. Upgrade requests, which need the connection
// hijacked after a 101, still go through httputil.ReverseProxy.
type relay struct {
	rt      http.RoundTripper
	rewrite func(*httputil.ProxyRequest)
	upgrade *httputil.ReverseProxy
}

// hopHeaders are removed from both directions (RFC 9110 §7.6.1 and the
// ones ReverseProxy removes).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				delete(h, textproto.CanonicalMIMEHeaderKey(f))
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

func (rl *relay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, ok := r.Header["Upgrade"]; ok {
		rl.upgrade.ServeHTTP(&markTunnel{ResponseWriter: w, info: infoFrom(r.Context())}, r)
		return
	}
	// 1xx responses go to the client as they come.
	wh := w.Header()
	it := informationals.Get().(*informational)
	it.w = w
	defer func() {
		it.w = nil
		informationals.Put(it)
	}()
	o := r.WithContext(httptrace.WithClientTrace(r.Context(), &it.trace))
	u := *r.URL
	o.URL = &u
	if r.ContentLength == 0 {
		o.Body = nil
	}
	if o.Body != nil {
		defer o.Body.Close()
	}
	o.Close = false
	h := r.Header
	te := false
	for _, v := range h["Te"] {
		if hasToken(v, "trailers") {
			te = true
		}
	}
	removeHopHeaders(h)
	if te {
		h["Te"] = []string{"trailers"}
	}
	delete(h, "Forwarded")
	delete(h, "X-Forwarded-For")
	delete(h, "X-Forwarded-Host")
	delete(h, "X-Forwarded-Proto")
	u.RawQuery = cleanQuery(u.RawQuery)
	u.Scheme = "http"
	if u.Host == "" {
		u.Host = r.Host
	}
	pr := &httputil.ProxyRequest{In: r, Out: o}
	if rl.rewrite != nil {
		rl.rewrite(pr)
	}
	req := pr.Out
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""} // no Go default
	}

	res, err := rl.rt.RoundTrip(req)
	if err != nil {
		proxyError(w, r, err)
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// Not asked for (upgrades went to ReverseProxy above).
		res.Body.Close()
		proxyError(w, r, errors.New("upstream switched protocols unasked"))
		return
	}
	removeHopHeaders(res.Header)
	for k, vv := range res.Header {
		if cur, ok := wh[k]; ok {
			wh[k] = append(cur, vv...)
		} else {
			wh[k] = vv
		}
	}
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		wh.Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(res.StatusCode)
	err = copyBody(w, res, flushEachWrite(res))
	res.Body.Close() // now: this fills res.Trailer
	if err != nil {
		// Streaming: nothing to do but break the response.
		panic(http.ErrAbortHandler)
	}
	if len(res.Trailer) > 0 {
		// Chunked, so that the trailers have somewhere to go (net/http
		// would otherwise compute a Content-Length for a short body).
		http.NewResponseController(w).Flush()
	}
	if len(res.Trailer) == announced {
		for k, vv := range res.Trailer {
			wh[k] = append(wh[k], vv...)
		}
		return
	}
	for k, vv := range res.Trailer {
		k = http.TrailerPrefix + k
		for _, v := range vv {
			wh.Add(k, v)
		}
	}
}

// informational forwards 1xx responses to w. It is pooled: a ClientTrace
// and its closure per request were a tenth of the relay's allocations. No
// 1xx can arrive once RoundTrip has returned the final response, and the
// relay returns only after that.
type informational struct {
	trace httptrace.ClientTrace
	w     http.ResponseWriter
}

var informationals = sync.Pool{New: func() any {
	it := new(informational)
	it.trace.Got1xxResponse = it.got1xx
	return it
}}

func (it *informational) got1xx(code int, header textproto.MIMEHeader) error {
	w := it.w
	if w == nil {
		return nil
	}
	wh := w.Header()
	for k, vv := range header {
		wh[k] = append(wh[k], vv...)
	}
	w.WriteHeader(code)
	clear(wh)
	return nil
}

// flushEachWrite: bodies of unknown length and event streams go out as they
// arrive (ReverseProxy's rule); others are left to net/http's buffering.
func flushEachWrite(res *http.Response) bool {
	if res.ContentLength == -1 {
		return true
	}
	return isEventStream(res.Header.Get("Content-Type"))
}

// isEventStream says whether a Content-Type value is text/event-stream,
// parameters aside, as mime.ParseMediaType would find it (without the map
// of parameters it builds for every response).
func isEventStream(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}

// copyBody copies the response body to the client, flushing after each
// write when flush is set.
func copyBody(w http.ResponseWriter, res *http.Response, flush bool) error {
	var f func()
	if flush {
		rc := http.NewResponseController(w)
		f = func() { rc.Flush() }
	}
	return bodycopy.Copy(w, res.Body, f)
}

// cleanQuery drops query parameters that do not parse (a ';' separator or a
// bad escape) by re-encoding the query, as ReverseProxy does, so that the
// upstream sees the query the proxy would parse.
func cleanQuery(q string) string {
	for i := 0; i < len(q); i++ {
		switch q[i] {
		case ';':
			return reencodeQuery(q)
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return reencodeQuery(q)
			}
			i += 2
		}
	}
	return q
}

func reencodeQuery(q string) string {
	v, _ := url.ParseQuery(q)
	return v.Encode()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func hasToken(v, token string) bool {
	for f := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(textproto.TrimString(f), token) {
			return true
		}
	}
	return false
}

// markTunnel marks the connection as a tunnel when the upgrade proxy takes
// it over after a switch of protocols, for the idle sweep (sweepIdle).
type markTunnel struct {
	http.ResponseWriter
	info *connInfo
}

// Hijack is found by http.ResponseController before it unwraps.
func (m *markTunnel) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(m.ResponseWriter).Hijack()
	if err == nil {
		m.info.tunnel.Store(true)
	}
	return c, brw, err
}

func (m *markTunnel) Unwrap() http.ResponseWriter { return m.ResponseWriter }
