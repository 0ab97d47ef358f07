package httpguard

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestCheckRewritesToCanonical(t *testing.T) {
	r := httptest.NewRequest("GET", "/a/%2e%2e/b//c?x=%2F#frag", nil)
	got, err := Check(r)
	if err != nil {
		t.Fatal(err)
	}
	if got.Path != "/b/c" || r.URL.Path != "/b/c" || r.URL.RawQuery != "x=%2F" || r.RequestURI != "/b/c?x=%2F" || r.URL.RequestURI() != "/b/c?x=%2F" {
		t.Errorf("got %+v, URL %q %q, RequestURI %q", got, r.URL.Path, r.URL.RawQuery, r.RequestURI)
	}
}

func TestCheckAbsoluteForm(t *testing.T) {
	r := httptest.NewRequest("GET", "http://backend/x/../admin?q", nil)
	got, err := Check(r)
	if err != nil || got.Path != "/admin" || r.URL.RawQuery != "q" {
		t.Errorf("got %+v %v, query %q", got, err, r.URL.RawQuery)
	}
}

func TestCheckRefuses(t *testing.T) {
	for name, mk := range map[string]func() *http.Request{
		"CONNECT": func() *http.Request { r := httptest.NewRequest("GET", "/", nil); r.Method = "CONNECT"; return r },
		"method":  func() *http.Request { r := httptest.NewRequest("GET", "/", nil); r.Method = "G T"; return r },
		"asterisk without OPTIONS": func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.RequestURI = "*"
			return r
		},
		"h2 Host disagrees with :authority": func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.ProtoMajor, r.Host = 2, "backend"
			r.Header.Set("Host", "admin")
			return r
		},
		"bad Host": func() *http.Request { r := httptest.NewRequest("GET", "/", nil); r.Host = "a/b"; return r },
		"query control": func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.RequestURI = "/?a=\x01"
			return r
		},
		"encoded slash": func() *http.Request { return httptest.NewRequest("GET", "/a%2Fb", nil) },
	} {
		if _, err := Check(mk()); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !errors.As(err, new(*Error)) {
			t.Errorf("%s: error %v has no bounded reason", name, err)
		}
	}
}

func TestCheckStripsH2C(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Connection", "Upgrade, HTTP2-Settings, keep-alive")
	r.Header.Set("Upgrade", "h2c")
	r.Header.Set("HTTP2-Settings", "AAMAAABkAAQAAP__")
	got, err := Check(r)
	if err != nil || !got.StrippedH2C || !got.Upgrade {
		t.Fatalf("got %+v %v", got, err)
	}
	if r.Header.Get("Upgrade") != "" || r.Header.Get("Http2-Settings") != "" || r.Header.Get("Connection") != "keep-alive" {
		t.Errorf("headers left: %v", r.Header)
	}
	ws := httptest.NewRequest("GET", "/", nil)
	ws.Header.Set("Connection", "upgrade")
	ws.Header.Set("Upgrade", "websocket")
	if got, err := Check(ws); err != nil || !got.Upgrade || got.StrippedH2C {
		t.Errorf("websocket: %+v %v", got, err)
	}
}

func TestParseHeadFraming(t *testing.T) {
	for head, want := range map[string]Framing{
		"GET / HTTP/1.1\r\nHost: a\r\n":                                                          {},
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n":                                   {Length: 12},
		"POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: Chunked\r\n":                           {Chunked: true},
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n": {Upgrade: true},
		"GET / HTTP/1.0\r\n":                         {},
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n":          {},
		"GET http://a:80/x HTTP/1.1\r\nHost: A.\r\n": {},
	} {
		got, err := ParseHead([]byte(head))
		if err != nil || got != want {
			t.Errorf("%q: %+v %v, want %+v", head, got, err, want)
		}
	}
}
