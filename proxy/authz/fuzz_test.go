package authz

import (
	"strings"
	"testing"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/httpguard"
)

// lenientView is how a permissive application may read a raw path: strip
// ";params" per segment (servlet containers), then decode every escape
// (%2F too), treat '\' as '/', resolve dot segments, fold case. If it reads
// the path as under /admin, the proxy's Deny on /admin must hold.
func lenientView(raw string) string {
	if i := strings.IndexByte(raw, '#'); i >= 0 {
		raw = raw[:i]
	}
	segs := strings.Split(raw, "/")
	for i, s := range segs {
		if j := strings.IndexByte(s, ';'); j >= 0 {
			segs[i] = s[:j]
		}
	}
	raw = strings.Join(segs, "/")
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '%' && i+2 < len(raw) {
			if h, ok := unhexByte(raw[i+1]); ok {
				if l, ok := unhexByte(raw[i+2]); ok {
					c = h<<4 | l
					i += 2
				}
			}
		}
		if c == '\\' {
			c = '/'
		}
		b.WriteByte(c)
	}
	var out []string
	for s := range strings.SplitSeq(b.String(), "/") {
		switch s {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
		}
	}
	return strings.ToLower("/" + strings.Join(out, "/"))
}

func unhexByte(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// FuzzDenyPrefixHolds: no spelling of a path under /admin reaches the
// application past a Deny on /admin, and no spelling of a path outside
// /public is let through by an Allow on /public.
func FuzzDenyPrefixHolds(f *testing.F) {
	for _, s := range []string{"/admin", "/%61dmin", "/ADMIN/x", "/x/../admin", "//admin", `\admin`, "/admin;a/x", "/%2e%2e/admin", "/admin%2fx", "/public/../admin", "/public", "/pub%6cic/x", "/x/..;/admin"} {
		f.Add(s)
	}
	e, err := Compile(&meshconfig.Inbound{DefaultPolicy: meshconfig.DefaultAllow, Policies: []meshconfig.AuthorizationPolicy{
		{Source: "ns/deny-admin", Action: meshconfig.ActionDeny, Rules: []meshconfig.AuthorizationRule{{To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{{Type: meshconfig.MatchPathPrefix, Value: "/admin"}}}}}}},
	}}, "cluster.local")
	if err != nil {
		f.Fatal(err)
	}
	pub, err := Compile(&meshconfig.Inbound{DefaultPolicy: meshconfig.DefaultAllow, Policies: []meshconfig.AuthorizationPolicy{
		{Source: "ns/public", Action: meshconfig.ActionAllow, Rules: []meshconfig.AuthorizationRule{{To: []meshconfig.Operation{{Paths: []meshconfig.PathMatch{{Type: meshconfig.MatchPathPrefix, Value: "/public"}}}}}}},
	}}, "cluster.local")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		norm, err := httpguard.NormalizePath(raw)
		if err != nil {
			return // refused with 400: nothing reaches the application
		}
		view := lenientView(raw)
		if view == "/admin" || strings.HasPrefix(view, "/admin/") {
			if d := e.Decide(&Request{HTTP: true, Method: "GET", Path: norm}); d.Allow {
				t.Fatalf("%q (normalized %q, app may read %q) passed the Deny on /admin", raw, norm, view)
			}
		}
		if d := pub.Decide(&Request{HTTP: true, Method: "GET", Path: norm}); d.Allow {
			// The app receives norm; a case-sensitive app reads it as is.
			if !(norm == "/public" || strings.HasPrefix(norm, "/public/")) {
				t.Fatalf("%q (normalized %q) allowed outside /public", raw, norm)
			}
		}
	})
}
