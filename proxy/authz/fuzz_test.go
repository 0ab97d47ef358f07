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

// FuzzDecide builds a policy from fuzzed fields and checks the evaluation
// order: a Deny that matches everything always denies, an Allow that
// matches everything never overturns a Deny, and evaluating never panics.
func FuzzDecide(f *testing.F) {
	f.Add("spiffe://cluster.local/ns/shop/sa/frontend", "shop", "shop/frontend", "GET", "/api", "/api/x", uint16(80), true, true, false)
	f.Add("", "", "", "", "/", "/", uint16(0), false, false, true)
	f.Add("*", "ops", "ops/admin", "DELETE", "/admin", "/ADMIN;x/y", uint16(8080), true, false, false)
	f.Fuzz(func(t *testing.T, id, ns, sa, method, value, path string, port uint16, http, isDeny, unauth bool) {
		src := meshconfig.Source{Unauthenticated: unauth}
		if !unauth {
			src.Identities = []string{id}
			if ns != "" {
				src.Namespaces = []string{ns}
			}
			if sa != "" {
				src.ServiceAccounts = []string{sa}
			}
		}
		op := meshconfig.Operation{Ports: []uint16{port}, Paths: []meshconfig.PathMatch{{Type: meshconfig.MatchPathPrefix, Value: value}}}
		if method != "" {
			op.Methods = []string{method}
		}
		action := meshconfig.ActionAllow
		if isDeny {
			action = meshconfig.ActionDeny
		}
		fuzzed := meshconfig.AuthorizationPolicy{Source: "f/fuzzed", Action: action, Rules: []meshconfig.AuthorizationRule{{From: []meshconfig.Source{src}, To: []meshconfig.Operation{op}}}}
		in := meshconfig.Inbound{DefaultPolicy: meshconfig.DefaultAllow, Policies: []meshconfig.AuthorizationPolicy{fuzzed}}
		e, err := Compile(&in, "cluster.local")
		if err != nil {
			return
		}
		norm, err := httpguard.NormalizePath(path)
		if err != nil {
			norm = "/"
		}
		peer := ""
		if !unauth {
			peer = id
		}
		r := Request{Port: port, Peer: peer, HTTP: http, Method: method, Path: norm}
		d := e.Decide(&r)

		denyAll := meshconfig.AuthorizationPolicy{Source: "f/deny-all", Action: meshconfig.ActionDeny, Rules: []meshconfig.AuthorizationRule{{}}}
		allowAll := meshconfig.AuthorizationPolicy{Source: "f/allow-all", Action: meshconfig.ActionAllow, Rules: []meshconfig.AuthorizationRule{{}}}
		withDeny := in
		withDeny.Policies = append([]meshconfig.AuthorizationPolicy{allowAll}, fuzzed, denyAll)
		if d2 := mustCompile(t, "", withDeny.Policies...).Decide(&r); d2.Allow || d2.Reason != ReasonDenyPolicy {
			t.Fatalf("a Deny matching everything did not deny: %+v", d2)
		}
		withAllow := in
		withAllow.Policies = append([]meshconfig.AuthorizationPolicy{allowAll}, fuzzed)
		d3 := mustCompile(t, "", withAllow.Policies...).Decide(&r)
		if d.Reason == ReasonDenyPolicy && d3.Allow {
			t.Fatalf("an Allow overturned a Deny: %+v then %+v", d, d3)
		}
		if d.Reason != ReasonDenyPolicy && !d3.Allow {
			t.Fatalf("an Allow matching everything did not allow: %+v then %+v", d, d3)
		}
	})
}
