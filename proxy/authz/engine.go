package authz

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/httpguard"
)

// Reason says why a decision was made. Its String is a bounded metric label.
type Reason uint8

const (
	ReasonDefaultAllow Reason = iota
	ReasonDefaultAuthenticated
	ReasonAllowPolicy
	ReasonDenyPolicy
	ReasonNoAllowMatch
	ReasonDefaultDeny
	ReasonUnauthenticated
)

var reasons = [...]string{
	ReasonDefaultAllow:         "default_allow",
	ReasonDefaultAuthenticated: "default_authenticated",
	ReasonAllowPolicy:          "allow_policy",
	ReasonDenyPolicy:           "deny_policy",
	ReasonNoAllowMatch:         "no_allow_match",
	ReasonDefaultDeny:          "default_deny",
	ReasonUnauthenticated:      "unauthenticated",
}

func (r Reason) String() string {
	if int(r) < len(reasons) {
		return reasons[r]
	}
	return "unknown"
}

// Decision is the answer for one request or connection.
type Decision struct {
	Allow  bool
	Reason Reason
	// Policy is the "namespace/name" of the policy that decided, empty when
	// the default did.
	Policy string
}

// Request is what a decision looks at. Path must already be normalized by
// httpguard.NormalizePath: the engine compares bytes.
type Request struct {
	// Port is the inbound (container) port the client addressed.
	Port uint16
	// Peer is the verified SPIFFE ID of the client, empty for plaintext.
	Peer string
	// HTTP is false for an opaque TCP connection; Method and Path are then
	// ignored and the L4 rules of the package comment apply.
	HTTP   bool
	Method string
	Path   string
}

// Engine is a compiled set of policies. It is immutable and safe for
// concurrent use; a nil Engine allows everything (no snapshot yet).
type Engine struct {
	def         meshconfig.DefaultPolicy
	trustDomain string
	ports       map[uint16]*portSet
	other       *portSet // ports no policy names
	rules       int
	// strict refuses unauthenticated callers whatever the policies say:
	// in Strict mTLS mode a plaintext caller can only exist through a
	// misconfiguration (a proxy without identity), never by policy.
	strict bool
}

type portSet struct {
	deny, allow []*policy
}

type policy struct {
	source string
	rules  []rule
}

type rule struct {
	from []source
	to   []operation
}

type source struct {
	unauthenticated bool
	anyIdentity     bool
	identities      []string
	namespaces      []string
	serviceAccounts []nsName
}

type nsName struct{ ns, name string }

type operation struct {
	ports   []uint16
	methods []string
	paths   []pathMatch
}

type pathMatch struct {
	prefix bool
	value  string // normalized; a prefix has no trailing "/" ("" is the root)
}

// CompileSnapshot builds the Engine of a whole snapshot: its inbound
// policies, trust domain and mTLS mode.
func CompileSnapshot(s *meshconfig.Snapshot) (*Engine, error) {
	e, err := Compile(&s.Inbound, s.TrustDomain)
	if err != nil {
		return nil, err
	}
	e.strict = s.MTLSMode == meshconfig.MTLSStrict
	return e, nil
}

// Compile builds an Engine from the inbound part of a snapshot. trustDomain,
// when set, is the only trust domain whose IDs match namespace and service
// account conditions. Anything the engine could misread is an error, so that
// the proxy rejects the whole snapshot instead of enforcing part of it.
func Compile(in *meshconfig.Inbound, trustDomain string) (*Engine, error) {
	e := &Engine{def: in.DefaultPolicy, trustDomain: trustDomain, ports: map[uint16]*portSet{}, other: &portSet{}}
	switch e.def {
	case "":
		// The control plane always sets a default; an empty one comes from
		// a snapshot written before authorization existed (or none at all)
		// and keeps that behaviour.
		e.def = meshconfig.DefaultAllow
	case meshconfig.DefaultAllow, meshconfig.DefaultDeny, meshconfig.DefaultAuthenticated:
	default:
		return nil, fmt.Errorf("inbound.defaultPolicy %q is not Allow, Deny or Authenticated", in.DefaultPolicy)
	}
	var errs []error
	compiled := make([]*policy, len(in.Policies))
	for i := range in.Policies {
		p, err := compilePolicy(&in.Policies[i])
		if err != nil {
			errs = append(errs, fmt.Errorf("inbound.policies[%d] (%s): %w", i, in.Policies[i].Source, err))
			continue
		}
		compiled[i] = p
		e.rules += len(p.rules)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// Every port a policy names gets its own list (its policies plus the
	// all-port ones, in snapshot order) so a decision is one map lookup.
	for _, ap := range in.Policies {
		for _, port := range ap.Ports {
			if e.ports[port] == nil {
				e.ports[port] = &portSet{}
			}
		}
	}
	for i, ap := range in.Policies {
		cp := compiled[i]
		if slices.Contains(ap.Ports, 0) {
			// The compiler's marker for "selects the workload, but none of
			// its ports resolved": the policy covers every port and its
			// rules match nothing, so an Allow allows nothing (fail closed).
			cp = &policy{source: cp.source}
		}
		add := func(s *portSet) {
			if ap.Action == meshconfig.ActionDeny {
				s.deny = append(s.deny, cp)
			} else {
				s.allow = append(s.allow, cp)
			}
		}
		if len(ap.Ports) == 0 || slices.Contains(ap.Ports, 0) {
			add(e.other)
			for _, s := range e.ports {
				add(s)
			}
			continue
		}
		for port, s := range e.ports {
			if slices.Contains(ap.Ports, port) {
				add(s)
			}
		}
	}
	return e, nil
}

func compilePolicy(ap *meshconfig.AuthorizationPolicy) (*policy, error) {
	if ap.Action != meshconfig.ActionAllow && ap.Action != meshconfig.ActionDeny {
		return nil, fmt.Errorf("action %q is not Allow or Deny", ap.Action)
	}
	deny := ap.Action == meshconfig.ActionDeny
	p := &policy{source: ap.Source}
	for i, r := range ap.Rules {
		var cr rule
		for j, f := range r.From {
			s, err := compileSource(f)
			if err != nil {
				return nil, fmt.Errorf("rules[%d].from[%d]: %w", i, j, err)
			}
			cr.from = append(cr.from, s)
		}
		for j, t := range r.To {
			op, err := compileOperation(t, deny)
			if err != nil {
				return nil, fmt.Errorf("rules[%d].to[%d]: %w", i, j, err)
			}
			cr.to = append(cr.to, op)
		}
		p.rules = append(p.rules, cr)
	}
	return p, nil
}

func compileSource(f meshconfig.Source) (source, error) {
	s := source{unauthenticated: f.Unauthenticated, namespaces: f.Namespaces}
	if f.Unauthenticated && (len(f.Identities)+len(f.Namespaces)+len(f.ServiceAccounts) > 0) {
		return s, errors.New("unauthenticated cannot be combined with identities, namespaces or serviceAccounts")
	}
	if !f.Unauthenticated && len(f.Identities)+len(f.Namespaces)+len(f.ServiceAccounts) == 0 {
		return s, errors.New("a from entry must name identities, namespaces, serviceAccounts or unauthenticated")
	}
	for _, id := range f.Identities {
		switch {
		case id == "*":
			s.anyIdentity = true
		case strings.HasPrefix(id, "spiffe://"):
			s.identities = append(s.identities, id)
		default:
			return s, fmt.Errorf("identity %q is not a SPIFFE ID or \"*\"", id)
		}
	}
	for _, ns := range f.Namespaces {
		if ns == "" || strings.Contains(ns, "/") {
			return s, fmt.Errorf("namespace %q is not a namespace name", ns)
		}
	}
	for _, sa := range f.ServiceAccounts {
		ns, name, ok := strings.Cut(sa, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return s, fmt.Errorf("serviceAccount %q is not \"namespace/name\"", sa)
		}
		s.serviceAccounts = append(s.serviceAccounts, nsName{ns, name})
	}
	return s, nil
}

func compileOperation(t meshconfig.Operation, deny bool) (operation, error) {
	op := operation{ports: t.Ports}
	for _, m := range t.Methods {
		if !httpguard.ValidToken(m) {
			return op, fmt.Errorf("method %q is not an HTTP token", m)
		}
		op.methods = append(op.methods, m)
	}
	for _, pm := range t.Paths {
		if !strings.HasPrefix(pm.Value, "/") {
			return op, fmt.Errorf("path %q is not absolute", pm.Value)
		}
		// The value goes through the same normalization as requests, so
		// that "/a%2Db" in a policy and "/a-b" on the wire compare equal.
		v, err := httpguard.NormalizePath(pm.Value)
		if err != nil {
			return op, fmt.Errorf("path %q: %w", pm.Value, err)
		}
		m := pathMatch{value: v}
		switch pm.Type {
		case meshconfig.MatchExact:
		case meshconfig.MatchPathPrefix:
			m.prefix = true
			m.value = strings.TrimRight(v, "/")
		default:
			return op, fmt.Errorf("path type %q is not Exact or PathPrefix", pm.Type)
		}
		if deny {
			m.value = stripParams(m.value)
		}
		op.paths = append(op.paths, m)
	}
	return op, nil
}

// stripParams removes ";params" from every segment.
func stripParams(p string) string {
	if !strings.Contains(p, ";") {
		return p
	}
	var b strings.Builder
	skip := false
	for i := 0; i < len(p); i++ {
		switch {
		case p[i] == '/':
			skip = false
		case p[i] == ';':
			skip = true
		}
		if !skip {
			b.WriteByte(p[i])
		}
	}
	return b.String()
}

// Rules is the number of compiled rules, for logs.
func (e *Engine) Rules() int {
	if e == nil {
		return 0
	}
	return e.rules
}

// Decide evaluates r. It allocates nothing.
func (e *Engine) Decide(r *Request) Decision {
	if e == nil {
		return Decision{Allow: true, Reason: ReasonDefaultAllow}
	}
	if e.strict && r.Peer == "" {
		return Decision{Reason: ReasonUnauthenticated}
	}
	set := e.other
	if s, ok := e.ports[r.Port]; ok {
		set = s
	}
	c := caller{id: r.Peer}
	if r.Peer != "" {
		c.ns, c.sa, c.workload = ParseWorkloadID(r.Peer, e.trustDomain)
	}
	for _, p := range set.deny {
		if policyMatches(p, &c, r, true) {
			return Decision{Reason: ReasonDenyPolicy, Policy: p.source}
		}
	}
	if len(set.allow) > 0 {
		for _, p := range set.allow {
			if policyMatches(p, &c, r, false) {
				return Decision{Allow: true, Reason: ReasonAllowPolicy, Policy: p.source}
			}
		}
		return Decision{Reason: ReasonNoAllowMatch}
	}
	switch e.def {
	case meshconfig.DefaultAllow:
		return Decision{Allow: true, Reason: ReasonDefaultAllow}
	case meshconfig.DefaultAuthenticated:
		if r.Peer != "" {
			return Decision{Allow: true, Reason: ReasonDefaultAuthenticated}
		}
		return Decision{Reason: ReasonUnauthenticated}
	}
	return Decision{Reason: ReasonDefaultDeny}
}

// caller is the peer, parsed once per decision.
type caller struct {
	id       string
	ns, sa   string
	workload bool // id is a workload ID of our trust domain
}

func policyMatches(p *policy, c *caller, r *Request, deny bool) bool {
	for i := range p.rules {
		if ruleMatches(&p.rules[i], c, r, deny) {
			return true
		}
	}
	return false
}

func ruleMatches(ru *rule, c *caller, r *Request, deny bool) bool {
	if len(ru.from) > 0 {
		ok := false
		for i := range ru.from {
			if sourceMatches(&ru.from[i], c) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(ru.to) == 0 {
		return true
	}
	for i := range ru.to {
		if ru.to[i].matches(r, deny) {
			return true
		}
	}
	return false
}

func sourceMatches(s *source, c *caller) bool {
	if s.unauthenticated {
		return c.id == ""
	}
	if c.id == "" {
		return false
	}
	if s.anyIdentity || len(s.identities) > 0 {
		if !s.anyIdentity && !slices.Contains(s.identities, c.id) {
			return false
		}
	}
	if len(s.namespaces) == 0 && len(s.serviceAccounts) == 0 {
		return true
	}
	if !c.workload {
		return false
	}
	ns, sa := c.ns, c.sa
	if len(s.namespaces) > 0 && !slices.Contains(s.namespaces, ns) {
		return false
	}
	if len(s.serviceAccounts) > 0 {
		found := false
		for _, x := range s.serviceAccounts {
			if x.ns == ns && x.name == sa {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (op *operation) matches(r *Request, deny bool) bool {
	if len(op.ports) > 0 && !slices.Contains(op.ports, r.Port) {
		return false
	}
	if len(op.methods) > 0 {
		if !r.HTTP {
			return deny
		}
		found := false
		for _, m := range op.methods {
			if strings.EqualFold(m, r.Method) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if len(op.paths) > 0 {
		if !r.HTTP {
			return deny
		}
		for i := range op.paths {
			pm := &op.paths[i]
			if deny && denyPathMatches(pm, r.Path) || !deny && allowPathMatches(pm, r.Path) {
				return true
			}
		}
		return false
	}
	return true
}
