package upstream

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// parsedHead is what a server reads from a request head.
type parsedHead struct {
	Method, RequestURI, Host string
	Header                   http.Header
	ContentLength            int64
	Close                    bool
}

func parseHead(t *testing.T, b []byte) parsedHead {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatalf("reading %q: %v", b, err)
	}
	return parsedHead{r.Method, r.RequestURI, r.Host, r.Header, r.ContentLength, r.Close}
}

// stdHead is the head Request.Write writes for r.
func stdHead(t *testing.T, r *http.Request) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := r.Write(&buf); err != nil {
		t.Fatalf("Request.Write: %v", err)
	}
	head, _, ok := bytes.Cut(buf.Bytes(), []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("no end of head in %q", buf.Bytes())
	}
	return append(head, "\r\n\r\n"...)
}

func newReq(t *testing.T, method, target string, body []byte) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r, err := http.NewRequest(method, target, rd)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A server reads the same request from our head as from Request.Write's.
func TestRequestHeadMatchesRequestWrite(t *testing.T) {
	cases := map[string]func() *http.Request{
		"get": func() *http.Request { return newReq(t, "GET", "http://svc.ns:8080/a/b?x=1&y=2", nil) },
		"empty method and path": func() *http.Request {
			r := newReq(t, "GET", "http://svc", nil)
			r.Method = ""
			return r
		},
		"force query":  func() *http.Request { return newReq(t, "GET", "http://svc/p?", nil) },
		"escaped path": func() *http.Request { return newReq(t, "GET", "http://svc/a%2Fb/c%20d", nil) },
		"host field wins": func() *http.Request {
			r := newReq(t, "GET", "http://10.0.0.1:80/", nil)
			r.Host = "api.example.com"
			return r
		},
		"ipv6":       func() *http.Request { return newReq(t, "GET", "http://[fd00::1]:8080/", nil) },
		"post body":  func() *http.Request { return newReq(t, "POST", "http://svc/", []byte("hello")) },
		"post empty": func() *http.Request { return newReq(t, "POST", "http://svc/", nil) },
		"delete":     func() *http.Request { return newReq(t, "DELETE", "http://svc/x", nil) },
		"head":       func() *http.Request { return newReq(t, "HEAD", "http://svc/x", nil) },
		"options":    func() *http.Request { return newReq(t, "OPTIONS", "http://svc/x", nil) },
		"no body sentinel": func() *http.Request {
			r := newReq(t, "PUT", "http://svc/", nil)
			r.Body = http.NoBody
			return r
		},
		"user agent set": func() *http.Request {
			r := newReq(t, "GET", "http://svc/", nil)
			r.Header["User-Agent"] = []string{"  curl/8 \r\n", "second"}
			return r
		},
		"user agent blank": func() *http.Request {
			r := newReq(t, "GET", "http://svc/", nil)
			r.Header["User-Agent"] = []string{""}
			return r
		},
		"user agent empty list": func() *http.Request {
			r := newReq(t, "GET", "http://svc/", nil)
			r.Header["User-Agent"] = []string{}
			return r
		},
		"close": func() *http.Request {
			r := newReq(t, "GET", "http://svc/", nil)
			r.Close = true
			return r
		},
		"close already asked": func() *http.Request {
			r := newReq(t, "GET", "http://svc/", nil)
			r.Close = true
			r.Header.Set("Connection", "keep-alive, Close")
			return r
		},
		"close in a longer token": func() *http.Request {
			r := newReq(t, "GET", "http://svc/", nil)
			r.Close = true
			r.Header.Set("Connection", "closed")
			return r
		},
		"fields": func() *http.Request {
			r := newReq(t, "POST", "http://svc/", []byte("{}"))
			h := r.Header
			h["Accept"] = []string{"a", "b", "c"}
			h["X-Spaces"] = []string{"  padded\t "}
			h["X-Newlines"] = []string{"one\r\ntwo\nthree\r"}
			h["Bad Name"] = []string{"dropped"}
			h["X-Empty"] = []string{""}
			h["Host"] = []string{"ignored"}
			h["Content-Length"] = []string{"999"}
			h["Transfer-Encoding"] = []string{"chunked"}
			h["Trailer"] = []string{"X-T"}
			h["lower-case"] = []string{"kept as given"}
			return r
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			r := mk()
			got, ok := appendRequestHead(nil, r)
			if !ok {
				t.Fatal("fast path refused the request")
			}
			want := stdHead(t, mk())
			if g, w := parseHead(t, got), parseHead(t, want); !reflect.DeepEqual(g, w) {
				t.Errorf("server reads\n%+v\nfrom ours (%q), and\n%+v\nfrom Request.Write (%q)", g, got, w, want)
			}
		})
	}
}

// Random fields and values: the same request reaches the server both ways.
func TestRequestHeadRandomFields(t *testing.T) {
	// Field-value characters, and CR and LF, which both writers turn
	// into spaces. Other control characters are refused before a request
	// gets here (net/http's server and transport).
	alphabet := []byte("aZ-_09 \t\r\n,;:=\"x/é")
	for i := range 2000 {
		mk := func() *http.Request {
			r := rand.New(rand.NewPCG(uint64(i), 7))
			w := func(n int) string {
				var b strings.Builder
				for range r.IntN(n) {
					b.WriteByte(alphabet[r.IntN(len(alphabet))])
				}
				return b.String()
			}
			var body []byte
			method := []string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"}[r.IntN(6)]
			if method != "GET" && method != "HEAD" && r.IntN(2) == 0 {
				body = []byte(w(50) + "x")
			}
			req := newReq(t, method, "http://svc:80/"+url.PathEscape(w(10))+"?q="+url.QueryEscape(w(10)), body)
			for range r.IntN(6) {
				req.Header[http.CanonicalHeaderKey("x-"+w(6))] = []string{w(20), w(20)}
			}
			if r.IntN(3) == 0 {
				req.Header["User-Agent"] = []string{w(10)}
			}
			req.Close = r.IntN(4) == 0
			return req
		}
		got, ok := appendRequestHead(nil, mk())
		if !ok {
			t.Fatalf("case %d: fast path refused the request", i)
		}
		want := stdHead(t, mk())
		if g, w := parseHead(t, got), parseHead(t, want); !reflect.DeepEqual(g, w) {
			t.Fatalf("case %d: server reads\n%+v\nfrom ours (%q), and\n%+v\nfrom Request.Write (%q)", i, g, got, w, want)
		}
	}
}

// What the fast path leaves to Request.Write.
func TestRequestHeadDeclines(t *testing.T) {
	cases := map[string]func() *http.Request{
		"connect": func() *http.Request {
			r := newReq(t, "CONNECT", "http://svc:443", nil)
			r.URL = &url.URL{Host: "svc:443"}
			return r
		},
		"opaque": func() *http.Request {
			r := newReq(t, "GET", "http://svc/", nil)
			r.URL.Opaque = "//svc/raw"
			return r
		},
		"unicode host": func() *http.Request {
			r := newReq(t, "GET", "http://svc/", nil)
			r.Host = "bücher.example"
			return r
		},
		"invalid host": func() *http.Request {
			r := newReq(t, "GET", "http://svc/", nil)
			r.Host = "a b"
			return r
		},
		"zone": func() *http.Request {
			r := newReq(t, "GET", "http://svc/", nil)
			r.Host = "[fe80::1%25eth0]:80"
			return r
		},
		"control byte in query": func() *http.Request {
			r := newReq(t, "GET", "http://svc/", nil)
			r.URL.RawQuery = "a=\n"
			return r
		},
		"length without body": func() *http.Request {
			r := newReq(t, "POST", "http://svc/", nil)
			r.ContentLength = 5
			return r
		},
		"trace of written fields": func() *http.Request {
			r := newReq(t, "GET", "http://svc/", nil)
			return r.WithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{WroteHeaderField: func(string, []string) {}}))
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			b, ok := appendRequestHead([]byte("kept"), mk())
			if ok {
				t.Fatalf("fast path wrote %q", b)
			}
			if string(b) != "kept" {
				t.Errorf("buffer became %q", b)
			}
		})
	}
}

// Writing a head allocates nothing once the buffer has grown.
func TestRequestHeadAllocations(t *testing.T) {
	r := newReq(t, "POST", "http://svc:8080/api/v1/items?limit=10", []byte("body"))
	r.Header.Set("Accept", "application/json")
	r.Header.Set("User-Agent", "")
	buf, _ := appendRequestHead(nil, r)
	if n := testing.AllocsPerRun(100, func() { buf, _ = appendRequestHead(buf[:0], r) }); n != 0 {
		t.Errorf("%v allocations per head", n)
	}
}
