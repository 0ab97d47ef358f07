package compiler

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

// compileRoute turns an HTTPRoute into the route for one port of svc; ok is
// false when the route's parentRefs to svc name another port.
func (w *World) compileRoute(r *gatewayv1.HTTPRoute, svc *corev1.Service, port corev1.ServicePort) (meshconfig.Route, bool) {
	applies := false
	for _, p := range r.Spec.ParentRefs {
		if isServiceRef(p.Group, p.Kind) && string(p.Name) == svc.Name && refNamespace(p.Namespace, r.Namespace) == svc.Namespace {
			if p.Port == nil || int32(*p.Port) == port.Port {
				applies = true
			}
		}
	}
	if !applies {
		return meshconfig.Route{}, false
	}
	mr := meshconfig.Route{
		Source:     "HTTPRoute " + r.Namespace + "/" + r.Name,
		Generation: r.Generation,
		// With it the proxy breaks precedence ties between routes by age as
		// Gateway API requires, instead of relying on list order.
		CreationTimestamp: r.CreationTimestamp.UTC(),
	}
	for _, h := range r.Spec.Hostnames {
		mr.Hostnames = append(mr.Hostnames, string(h))
	}
	for _, rule := range r.Spec.Rules {
		mrule := meshconfig.RouteRule{}
		if rule.Name != nil {
			mrule.Name = string(*rule.Name)
		}
		for _, m := range rule.Matches {
			mrule.Matches = append(mrule.Matches, convertMatch(m))
		}
		if _, bad := unsupportedFilter(rule); bad {
			// Skipping the filter could skip authentication or a
			// required header; sending the rule's requests elsewhere
			// could too. Gateway API asks for an error response: the
			// rule keeps its matches and has no backend (500). Status
			// reports it (PartiallyInvalid).
			mr.Rules = append(mr.Rules, mrule)
			continue
		}
		for _, f := range rule.Filters {
			if mf, ok := w.convertFilter(r.Namespace, f); ok {
				mrule.Filters = append(mrule.Filters, mf)
			}
		}
		for _, b := range rule.BackendRefs {
			mrule.Backends = append(mrule.Backends, w.backendRef(r.Namespace, b.BackendRef))
		}
		if len(rule.BackendRefs) == 0 && !hasRedirect(rule.Filters) {
			// GAMMA: a rule with no backendRefs sends to the parent Service
			// itself.
			mrule.Backends = []meshconfig.Backend{w.backend(svc.Namespace, svc.Name, port.Port, 1)}
		}
		if t := rule.Timeouts; t != nil {
			mrule.Timeouts = &meshconfig.Timeouts{Request: duration(t.Request), BackendRequest: duration(t.BackendRequest)}
		}
		// attempts: 0 asks for no retry at all, while the snapshot's 0 means
		// "the proxy's default": leave Retry out for it.
		if rt := rule.Retry; rt != nil && (rt.Attempts == nil || *rt.Attempts > 0) {
			mr := &meshconfig.Retry{Backoff: duration(rt.Backoff)}
			if rt.Attempts != nil {
				mr.Attempts = *rt.Attempts
			}
			for _, c := range rt.Codes {
				mr.Codes = append(mr.Codes, int(c))
			}
			mrule.Retry = mr
		}
		mr.Rules = append(mr.Rules, mrule)
	}
	return mr, true
}

// unsupportedFilter names the first filter of rule the mesh cannot apply:
// ExtensionRef, CORS, ExternalAuth, and any type added to Gateway API later.
func unsupportedFilter(rule gatewayv1.HTTPRouteRule) (gatewayv1.HTTPRouteFilterType, bool) {
	for _, f := range rule.Filters {
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier, gatewayv1.HTTPRouteFilterResponseHeaderModifier,
			gatewayv1.HTTPRouteFilterURLRewrite, gatewayv1.HTTPRouteFilterRequestRedirect, gatewayv1.HTTPRouteFilterRequestMirror:
		default:
			return f.Type, true
		}
	}
	return "", false
}

func hasRedirect(fs []gatewayv1.HTTPRouteFilter) bool {
	for _, f := range fs {
		if f.Type == gatewayv1.HTTPRouteFilterRequestRedirect {
			return true
		}
	}
	return false
}

// duration parses a Gateway API duration (GEP-2257, a subset of Go's syntax).
// The CRD schema has validated it; an unparsable value compiles to "none".
func duration(d *gatewayv1.Duration) meshconfig.Duration {
	if d == nil {
		return 0
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil || v < 0 {
		return 0
	}
	return meshconfig.Duration(v)
}

func convertMatch(m gatewayv1.HTTPRouteMatch) meshconfig.RouteMatch {
	out := meshconfig.RouteMatch{}
	if m.Path != nil {
		pm := &meshconfig.PathMatch{Type: meshconfig.MatchPathPrefix, Value: "/"}
		if m.Path.Type != nil {
			pm.Type = meshconfig.MatchType(*m.Path.Type)
		}
		if m.Path.Value != nil {
			pm.Value = *m.Path.Value
		}
		out.Path = pm
	}
	for _, h := range m.Headers {
		t := meshconfig.MatchExact
		if h.Type != nil {
			t = meshconfig.MatchType(*h.Type)
		}
		out.Headers = append(out.Headers, meshconfig.ValueMatch{Type: t, Name: string(h.Name), Value: h.Value})
	}
	for _, q := range m.QueryParams {
		t := meshconfig.MatchExact
		if q.Type != nil {
			t = meshconfig.MatchType(*q.Type)
		}
		out.QueryParams = append(out.QueryParams, meshconfig.ValueMatch{Type: t, Name: string(q.Name), Value: q.Value})
	}
	if m.Method != nil {
		out.Method = string(*m.Method)
	}
	return out
}

func (w *World) convertFilter(ns string, f gatewayv1.HTTPRouteFilter) (meshconfig.Filter, bool) {
	out := meshconfig.Filter{Type: meshconfig.FilterType(f.Type)}
	switch f.Type {
	case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
		out.RequestHeaderModifier = headerModifier(f.RequestHeaderModifier)
	case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
		out.ResponseHeaderModifier = headerModifier(f.ResponseHeaderModifier)
	case gatewayv1.HTTPRouteFilterURLRewrite:
		if f.URLRewrite == nil {
			return out, false
		}
		out.URLRewrite = &meshconfig.URLRewrite{Path: pathModifier(f.URLRewrite.Path)}
		if f.URLRewrite.Hostname != nil {
			out.URLRewrite.Hostname = string(*f.URLRewrite.Hostname)
		}
	case gatewayv1.HTTPRouteFilterRequestRedirect:
		rr := f.RequestRedirect
		if rr == nil {
			return out, false
		}
		red := &meshconfig.Redirect{Path: pathModifier(rr.Path)}
		if rr.Scheme != nil {
			red.Scheme = *rr.Scheme
		}
		if rr.Hostname != nil {
			red.Hostname = string(*rr.Hostname)
		}
		if rr.Port != nil {
			red.Port = uint16(*rr.Port)
		}
		if rr.StatusCode != nil {
			red.StatusCode = *rr.StatusCode
		}
		out.RequestRedirect = red
	case gatewayv1.HTTPRouteFilterRequestMirror:
		m := f.RequestMirror
		if m == nil {
			return out, false
		}
		mir := &meshconfig.Mirror{Backend: w.backendRef(ns, gatewayv1.BackendRef{BackendObjectReference: m.BackendRef})}
		switch {
		case m.Percent != nil:
			mir.Percent = uint32(*m.Percent)
		case m.Fraction != nil:
			den := int32(100)
			if m.Fraction.Denominator != nil && *m.Fraction.Denominator > 0 {
				den = *m.Fraction.Denominator
			}
			// The snapshot counts in whole percents; round up so a small
			// fraction still mirrors something.
			mir.Percent = uint32((int64(m.Fraction.Numerator)*100 + int64(den) - 1) / int64(den))
		default:
			mir.Percent = 100
		}
		if mir.Percent == 0 {
			// Gateway API's 0% mirrors nothing; the snapshot's 0 would mean
			// 100%, so the filter is dropped.
			return out, false
		}
		if mir.Percent > 100 {
			mir.Percent = 100
		}
		out.RequestMirror = mir
	default:
		// ExtensionRef and filters the mesh profile does not use.
		return out, false
	}
	return out, true
}

func headerModifier(h *gatewayv1.HTTPHeaderFilter) *meshconfig.HeaderModifier {
	if h == nil {
		return &meshconfig.HeaderModifier{}
	}
	out := &meshconfig.HeaderModifier{Remove: append([]string(nil), h.Remove...)}
	for _, s := range h.Set {
		out.Set = append(out.Set, meshconfig.Header{Name: string(s.Name), Value: s.Value})
	}
	for _, a := range h.Add {
		out.Add = append(out.Add, meshconfig.Header{Name: string(a.Name), Value: a.Value})
	}
	return out
}

func pathModifier(p *gatewayv1.HTTPPathModifier) *meshconfig.PathModifier {
	if p == nil {
		return nil
	}
	out := &meshconfig.PathModifier{Type: meshconfig.PathModifierType(p.Type)}
	switch p.Type {
	case gatewayv1.FullPathHTTPPathModifier:
		if p.ReplaceFullPath != nil {
			out.Value = *p.ReplaceFullPath
		}
	case gatewayv1.PrefixMatchHTTPPathModifier:
		if p.ReplacePrefixMatch != nil {
			out.Value = *p.ReplacePrefixMatch
		}
	}
	return out
}
