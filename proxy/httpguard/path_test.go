package httpguard

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	ok := map[string]string{
		"/":                       "/",
		"/a/b":                    "/a/b",
		"/a//b///c":               "/a/b/c",
		"/a/./b/../c":             "/a/c",
		"/../../etc/passwd":       "/etc/passwd",
		"/a/b/..":                 "/a/",
		"/a/b/.":                  "/a/b/",
		"/a/":                     "/a/",
		`\admin\users`:            "/admin/users",
		`/a\..\admin`:             "/admin",
		"/%61dmin":                "/admin",
		"/%2e%2e/admin":           "/admin",
		"/x/%2E%2e/admin":         "/admin",
		"/x/.%2e/admin":           "/admin",
		"/a%2db":                  "/a-b",
		"/a%3bb":                  "/a%3Bb",
		"/a%3Bb":                  "/a%3Bb",
		"/a%25b":                  "/a%25b",
		"/caf%C3%A9":              "/caf%C3%A9",
		"/caf\xc3\xa9":            "/caf%C3%A9",
		"/a b"[:2] + "%20b":       "/a%20b",
		"/a|b":                    "/a%7Cb",
		"/admin#frag":             "/admin",
		"/admin/..#/../x":         "/",
		"/a;jsessionid=1/b":       "/a;jsessionid=1/b",
		"/a/...":                  "/a/...",
		"/~user/_x-y.z":           "/~user/_x-y.z",
		"/:@!$&'()*+,;=":          "/:@!$&'()*+,;=",
		"/%7euser":                "/~user",
		"//admin":                 "/admin",
		"/./admin":                "/admin",
		"/%2e/admin":              "/admin",
		"/a/%2e%2e%2e":            "/a/...",
		"/A/B":                    "/A/B",
		"/%41":                    "/A",
		"/%F0%9F%98%80":           "/%F0%9F%98%80",
		"/\xf0\x9f\x98\x80":       "/%F0%9F%98%80",
		"/%e2%82%ac":              "/%E2%82%AC",
		"/a[b]":                   "/a%5Bb%5D",
		"/a\"<>`{}^":              "/a%22%3C%3E%60%7B%7D%5E",
		"/ok/%40":                 "/ok/%40",
		"/x/..%2f..%2fadmin"[:5]:  "/",
		"/x/y/z/../../../../../a": "/a",
	}
	for in, want := range ok {
		got, err := NormalizePath(in)
		if err != nil || got != want {
			t.Errorf("NormalizePath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := map[string]error{
		"":                  ErrNotAbsolute,
		"admin":             ErrNotAbsolute,
		"/a%2fb":            ErrEncodedSlash,
		"/a%2Fb":            ErrEncodedSlash,
		"/a%5cb":            ErrEncodedSlash,
		"/a%5Cb":            ErrEncodedSlash,
		"/..%2fadmin":       ErrEncodedSlash,
		"/a%":               ErrBadEncoding,
		"/a%2":              ErrBadEncoding,
		"/a%zz":             ErrBadEncoding,
		"/a%g0":             ErrBadEncoding,
		"/a%00b":            ErrControlChar,
		"/a\x00b":           ErrControlChar,
		"/a\rb":             ErrControlChar,
		"/a\nb":             ErrControlChar,
		"/a%0d%0ab":         ErrControlChar,
		"/a%0Ab":            ErrControlChar,
		"/a b":              ErrControlChar,
		"/a\tb":             ErrControlChar,
		"/a%7f":             ErrControlChar,
		"/%c0%ae%c0%ae/x":   ErrInvalidUTF8, // overlong "."
		"/%c0%af":           ErrInvalidUTF8, // overlong "/"
		"/%e0%80%af":        ErrInvalidUTF8, // 3-byte overlong "/"
		"/\xc0\xae":         ErrInvalidUTF8,
		"/%ff":              ErrInvalidUTF8,
		"/%ed%a0%80":        ErrInvalidUTF8, // surrogate
		"/x/..;/admin":      ErrDotParams,
		"/x/.;/admin":       ErrDotParams,
		"/x/%2e%2e;a/admin": ErrDotParams,
		"/;/admin":          ErrEmptyParams,
		"/x/;a=b/admin":     ErrEmptyParams,
	}
	for in, want := range bad {
		if got, err := NormalizePath(in); !errors.Is(err, want) {
			t.Errorf("NormalizePath(%q) = %q, %v; want error %v", in, got, err, want)
		}
	}
}

func TestNormalizeIdempotent(t *testing.T) {
	for _, in := range []string{"/a/../b/%2e/c//", "/caf%c3%a9", "/%7e", "/a%3b;b", "/a|b"} {
		once, err := NormalizePath(in)
		if err != nil {
			t.Fatal(err)
		}
		twice, err := NormalizePath(once)
		if err != nil || twice != once {
			t.Errorf("%q: once %q, twice %q, %v", in, once, twice, err)
		}
	}
}

func TestCanonicalFastPathAllocatesNothing(t *testing.T) {
	p := "/api/v1/users/42"
	if n := testing.AllocsPerRun(100, func() { NormalizePath(p) }); n != 0 {
		t.Errorf("canonical path: %v allocations", n)
	}
}

func TestValidToken(t *testing.T) {
	for _, s := range []string{"GET", "PROPFIND", "x-custom", "M-SEARCH"} {
		if !ValidToken(s) {
			t.Errorf("%q refused", s)
		}
	}
	for _, s := range []string{"", "GE T", "GET\x00", "G:T", "GÉT", strings.Repeat("(", 1)} {
		if ValidToken(s) {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestCanonicalHost(t *testing.T) {
	for in, want := range map[string]string{
		"Backend.Shop.svc.cluster.local.": "backend.shop.svc.cluster.local",
		"backend:80":                      "backend",
		"BACKEND.:443":                    "backend",
		"backend:8080":                    "backend:8080",
		"[::1]:80":                        "::1",
	} {
		if got := CanonicalHost(in); got != want {
			t.Errorf("CanonicalHost(%q) = %q, want %q", in, got, want)
		}
	}
}
