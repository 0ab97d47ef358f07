package sidecar

import (
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/weftmesh/weft/proxy/upstream"
)

// TestRelayRequestAndResponseHeaders checks what relay changes on the way:
// the same as httputil.ReverseProxy with a Rewrite function (the upgrade
// path), which runs the same checks.
func TestRelayRequestAndResponseHeaders(t *testing.T) {
	for name, mk := range map[string]func(http.RoundTripper, func(*httputil.ProxyRequest)) http.Handler{
		"relay":        newReverseProxy,
		"ReverseProxy": func(rt http.RoundTripper, f func(*httputil.ProxyRequest)) http.Handler { return newUpgradeProxy(rt, f) },
	} {
		t.Run(name, func(t *testing.T) { testRelayHeaders(t, mk) })
	}
}

func testRelayHeaders(t *testing.T, mk func(http.RoundTripper, func(*httputil.ProxyRequest)) http.Handler) {
	var seen http.Header
	var seenURI string
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, seenURI = r.Header.Clone(), r.URL.RequestURI()
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-End", "kept")
		w.Header().Set("Trailer", "X-Sum")
		w.Write([]byte("body"))
		w.Header().Set("X-Sum", "42")
		w.Header().Set(http.TrailerPrefix+"X-Late", "unannounced")
	}))
	defer app.Close()
	pool := upstream.New(upstream.Options{})
	defer pool.CloseIdle()
	target := strings.TrimPrefix(app.URL, "http://")
	proxy := httptest.NewServer(mk(pool.Plain(), func(pr *httputil.ProxyRequest) { pr.Out.URL.Host = target }))
	defer proxy.Close()

	req, _ := http.NewRequest(http.MethodGet, proxy.URL+"/p?a=1;b=2&c=3", nil)
	req.Host = "svc.example"
	req.Header.Set("Connection", "X-Private, keep-alive")
	req.Header.Set("X-Private", "secret")
	req.Header.Set("Te", "trailers, deflate")
	req.Header.Set("Proxy-Authorization", "Basic x")
	req.Header.Set("X-Forwarded-For", "10.0.0.1")
	req.Header.Set("Forwarded", "for=10.0.0.1")
	req.Header.Set("X-Keep", "yes")
	req.Header["User-Agent"] = nil // net/http would add its own
	res, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()

	for _, k := range []string{"X-Private", "Proxy-Authorization", "X-Forwarded-For", "Forwarded", "Connection", "User-Agent"} {
		if v, ok := seen[k]; ok {
			t.Errorf("app got %s: %q", k, v)
		}
	}
	if seen.Get("Te") != "trailers" || seen.Get("X-Keep") != "yes" {
		t.Errorf("app got Te %q, X-Keep %q", seen.Get("Te"), seen.Get("X-Keep"))
	}
	if seenURI != "/p?c=3" {
		t.Errorf("app got %q: the unparsable parameters should be dropped", seenURI)
	}
	if string(body) != "body" || res.Header.Get("X-End") != "kept" || res.Header.Get("X-Hop") != "" || res.Header.Get("Keep-Alive") != "" {
		t.Errorf("response %q, headers %v", body, res.Header)
	}
	if res.Trailer.Get("X-Sum") != "42" || res.Trailer.Get("X-Late") != "unannounced" {
		t.Errorf("trailers %v", res.Trailer)
	}
}

// TestRelayInformational: 1xx responses reach the client before the final
// one.
func TestRelayInformational(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Write([]byte("done"))
	}))
	defer app.Close()
	pool := upstream.New(upstream.Options{})
	defer pool.CloseIdle()
	target := strings.TrimPrefix(app.URL, "http://")
	proxy := httptest.NewServer(newReverseProxy(pool.Plain(), func(pr *httputil.ProxyRequest) { pr.Out.URL.Host = target }))
	defer proxy.Close()
	var mu sync.Mutex
	var links []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		mu.Lock()
		defer mu.Unlock()
		if code == http.StatusEarlyHints {
			links = append(links, h.Get("Link"))
		}
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, proxy.URL, nil)
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(b) != "done" || len(links) != 1 || links[0] != "</a.css>; rel=preload" || res.Header.Get("Link") != "" {
		t.Errorf("body %q, early hints %q, final Link %q", b, links, res.Header.Get("Link"))
	}
}

func TestCleanQuery(t *testing.T) {
	for in, want := range map[string]string{
		"":            "",
		"a=1&b=2":     "a=1&b=2",
		"a=%20":       "a=%20",
		"a=1;b=2":     "",
		"a=1;b=2&c=3": "c=3",
		"a=%zz&b=2":   "b=2",
		"a=%2":        "",
	} {
		if got := cleanQuery(in); got != want {
			v, _ := url.ParseQuery(in)
			t.Errorf("cleanQuery(%q) = %q, want %q (ParseQuery: %v)", in, got, want, v)
		}
	}
}

// isEventStream agrees with mime.ParseMediaType on what is an event stream.
func TestIsEventStream(t *testing.T) {
	for _, ct := range []string{
		"text/event-stream", "TEXT/Event-Stream", " text/event-stream ; charset=utf-8", "text/event-stream;x=1",
		"text/plain", "", "text/event-streams", "text/event-stream garbage", "application/json; a=b",
	} {
		mt, _, _ := mime.ParseMediaType(ct)
		if want := mt == "text/event-stream"; isEventStream(ct) != want {
			t.Errorf("isEventStream(%q) = %v, mime.ParseMediaType says %v", ct, !want, want)
		}
	}
}
