package meshconfig

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
)

// Validate checks what the JSON shape cannot. It is the proxy's last line of
// defence against a snapshot it would misapply; the control plane builds
// snapshots that pass it.
func (s *Snapshot) Validate() error {
	var errs []error
	if s.Version == "" {
		errs = append(errs, errors.New("version is empty"))
	}
	switch s.MTLSMode {
	case "", MTLSStrict, MTLSPermissive:
	default:
		errs = append(errs, fmt.Errorf("mtlsMode %q is not Strict or Permissive", s.MTLSMode))
	}
	for i, svc := range s.Outbound.Services {
		for _, a := range svc.Addresses {
			if _, err := netip.ParseAddr(a); err != nil {
				errs = append(errs, fmt.Errorf("outbound.services[%d] (%s/%s): address %q: %w", i, svc.Namespace, svc.Name, a, err))
			}
		}
		for j, p := range svc.Ports {
			where := fmt.Sprintf("outbound.services[%d].ports[%d]", i, j)
			errs = append(errs, validatePort(where, p.Port), validateProtocol(where, p.Protocol))
			errs = append(errs, validateBackends(where+".defaultBackends", p.DefaultBackends)...)
			for k, r := range p.Routes {
				errs = append(errs, validateRoute(fmt.Sprintf("%s.routes[%d]", where, k), r)...)
			}
		}
	}
	for i, p := range s.Inbound.Ports {
		where := fmt.Sprintf("inbound.ports[%d]", i)
		errs = append(errs, validatePort(where, p.Port), validateProtocol(where, p.Protocol))
	}
	switch s.Inbound.DefaultPolicy {
	case "", DefaultAllow, DefaultDeny, DefaultAuthenticated:
	default:
		errs = append(errs, fmt.Errorf("inbound.defaultPolicy %q is not Allow, Deny or Authenticated", s.Inbound.DefaultPolicy))
	}
	for i, p := range s.Inbound.Policies {
		if p.Action != ActionAllow && p.Action != ActionDeny {
			errs = append(errs, fmt.Errorf("inbound.policies[%d] (%s): action %q is not Allow or Deny", i, p.Source, p.Action))
		}
		for j, r := range p.Rules {
			for k, op := range r.To {
				for l, pm := range op.Paths {
					if pm.Type != MatchExact && pm.Type != MatchPathPrefix {
						errs = append(errs, fmt.Errorf("inbound.policies[%d].rules[%d].to[%d].paths[%d]: type %q is not Exact or PathPrefix", i, j, k, l, pm.Type))
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

func validatePort(where string, p uint16) error {
	if p == 0 {
		return fmt.Errorf("%s: port 0", where)
	}
	return nil
}

func validateProtocol(where string, p Protocol) error {
	switch p {
	case ProtocolDetect, ProtocolHTTP1, ProtocolHTTP2, ProtocolGRPC, ProtocolOpaque:
		return nil
	}
	return fmt.Errorf("%s: unknown protocol %q", where, p)
}

func validateBackends(where string, bs []Backend) []error {
	var errs []error
	for i, b := range bs {
		for j, e := range b.Endpoints {
			if _, err := netip.ParseAddrPort(e.Address); err != nil {
				errs = append(errs, fmt.Errorf("%s[%d].endpoints[%d]: address %q: %w", where, i, j, e.Address, err))
			}
		}
	}
	return errs
}

func validateRoute(where string, r Route) []error {
	var errs []error
	for i, rule := range r.Rules {
		rw := fmt.Sprintf("%s.rules[%d]", where, i)
		errs = append(errs, validateBackends(rw+".backends", rule.Backends)...)
		for j, m := range rule.Matches {
			mw := fmt.Sprintf("%s.matches[%d]", rw, j)
			if m.Path != nil {
				errs = append(errs, validateMatch(mw+".path", m.Path.Type, m.Path.Value, true))
			}
			for k, h := range m.Headers {
				errs = append(errs, validateMatch(fmt.Sprintf("%s.headers[%d]", mw, k), h.Type, h.Value, false))
			}
			for k, q := range m.QueryParams {
				errs = append(errs, validateMatch(fmt.Sprintf("%s.queryParams[%d]", mw, k), q.Type, q.Value, false))
			}
		}
		for j, f := range rule.Filters {
			if f.Type == FilterRequestMirror && f.RequestMirror != nil {
				errs = append(errs, validateBackends(fmt.Sprintf("%s.filters[%d].requestMirror", rw, j), []Backend{f.RequestMirror.Backend})...)
			}
		}
	}
	return errs
}

func validateMatch(where string, t MatchType, v string, path bool) error {
	switch t {
	case MatchExact:
	case MatchPathPrefix:
		if !path {
			return fmt.Errorf("%s: PathPrefix only applies to paths", where)
		}
	case MatchRegex:
		if _, err := regexp.Compile(v); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	default:
		return fmt.Errorf("%s: unknown match type %q", where, t)
	}
	return nil
}
