package route

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

// TestReplacePrefixMatch is the table from the Gateway API HTTPPathModifier
// documentation (ReplacePrefixMatch), plus the full-path case.
func TestReplacePrefixMatch(t *testing.T) {
	tests := []struct {
		match, replace, request, want string
	}{
		{"/foo/bar", "/xyz", "/foo/bar", "/xyz"},
		{"/foo/bar", "/xyz/", "/foo/bar", "/xyz/"},
		{"/foo/bar", "/xyz", "/foo/bar/", "/xyz/"},
		{"/foo/bar", "/xyz/", "/foo/bar/", "/xyz/"},
		{"/foo", "/xyz", "/foo/bar", "/xyz/bar"},
		{"/foo/", "/xyz", "/foo/bar", "/xyz/bar"},
		{"/foo/", "/xyz/", "/foo/bar", "/xyz/bar"},
		{"/", "/xyz", "/foo/bar", "/xyz/foo/bar"},
		{"/", "/xyz/", "/foo/bar", "/xyz/foo/bar"},
		{"/", "/", "/foo/bar", "/foo/bar"},
		{"/foo", "/", "/foo/bar", "/bar"},
		{"/foo", "/", "/foo", "/"},
		{"/foo", "", "/foo", "/"},
	}
	for _, tt := range tests {
		t.Run(tt.match+"→"+tt.replace+" on "+tt.request, func(t *testing.T) {
			e := &entry{kind: pathPrefix, path: normalizePrefix(tt.match)}
			got, ok := modifyPath(tt.request, &meshconfig.PathModifier{Type: meshconfig.ReplacePrefixMatch, Value: tt.replace}, e)
			if !ok || got != tt.want {
				t.Fatalf("got %q (ok=%v), want %q", got, ok, tt.want)
			}
		})
	}
	t.Run("not after a prefix match", func(t *testing.T) {
		if _, ok := modifyPath("/foo", &meshconfig.PathModifier{Type: meshconfig.ReplacePrefixMatch, Value: "/x"}, &entry{kind: pathExact, path: "/foo"}); ok {
			t.Fatal("ReplacePrefixMatch applied after an Exact match")
		}
	})
	t.Run("full path", func(t *testing.T) {
		if got, _ := modifyPath("/a/b/c", &meshconfig.PathModifier{Type: meshconfig.ReplaceFullPath, Value: "/z"}, nil); got != "/z" {
			t.Fatalf("got %q", got)
		}
	})
}

// TestRedirectLocation follows HTTPRequestRedirectFilter's port rules.
func TestRedirectLocation(t *testing.T) {
	tests := []struct {
		name     string
		redirect meshconfig.Redirect
		target   string
		host     string
		want     string
	}{
		{"defaults keep host, path, query; listener port", meshconfig.Redirect{}, "/p?q=1", "svc.ns", "http://svc.ns:8080/p?q=1"},
		{"scheme change implies its well-known port, omitted", meshconfig.Redirect{Scheme: "https"}, "/p", "svc.ns:8080", "https://svc.ns/p"},
		{"explicit port", meshconfig.Redirect{Scheme: "https", Port: 8443}, "/p", "svc", "https://svc:8443/p"},
		{"explicit well-known port omitted", meshconfig.Redirect{Port: 80}, "/p", "svc", "http://svc/p"},
		{"hostname and full path", meshconfig.Redirect{Hostname: "other.ns", Port: 80, Path: &meshconfig.PathModifier{Type: meshconfig.ReplaceFullPath, Value: "/new"}}, "/old?x=y", "svc", "http://other.ns/new?x=y"},
		{"prefix replaced", meshconfig.Redirect{Port: 80, Path: &meshconfig.PathModifier{Type: meshconfig.ReplacePrefixMatch, Value: "/v2"}}, "/v1/items", "svc", "http://svc/v2/items"},
	}
	tab := mustCompile(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tt.target, nil)
			r.Host = tt.host
			e := &entry{kind: pathPrefix, path: "/v1"}
			if got := tab.redirectLocation(r, &tt.redirect, e); got != tt.want {
				t.Fatalf("Location %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRemoveHopHeaders(t *testing.T) {
	h := http.Header{
		"Connection":        {"keep-alive, X-Private"},
		"X-Private":         {"secret"},
		"Keep-Alive":        {"timeout=5"},
		"Te":                {"trailers, deflate"},
		"Transfer-Encoding": {"chunked"},
		"X-Kept":            {"yes"},
	}
	removeHopHeaders(h, true)
	want := http.Header{"Te": {"trailers"}, "X-Kept": {"yes"}}
	if len(h) != len(want) || h.Get("Te") != "trailers" || h.Get("X-Kept") != "yes" {
		t.Fatalf("after removal: %v, want %v", h, want)
	}
}

func TestUnescapedEquals(t *testing.T) {
	tests := []struct {
		raw, want string
		eq        bool
	}{
		{"abc", "abc", true},
		{"a+b", "a b", true},
		{"a%20b", "a b", true},
		{"%7e", "~", true},
		{"%7E", "~", true},
		{"a%2", "a%2", false},
		{"a%zz", "a%zz", false},
		{"ab", "abc", false},
		{"abc", "ab", false},
	}
	for _, tt := range tests {
		if got := unescapedEquals(tt.raw, tt.want); got != tt.eq {
			t.Errorf("unescapedEquals(%q, %q) = %v, want %v", tt.raw, tt.want, got, tt.eq)
		}
	}
}
