package route

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/route/balance"
)

// Options are what the proxy core supplies when compiling a table.
type Options struct {
	// Transport returns the round tripper for one endpoint (plaintext or
	// mTLS to its identity). It is called once per endpoint at Compile, not
	// per request, so it may build or look up a pooled transport. Required.
	Transport func(ep meshconfig.Endpoint) http.RoundTripper
	// Store keeps endpoint state (latency, failure accrual) across snapshots.
	// Pass the same store to every Compile; nil gives the table a private
	// one, which forgets everything at the next snapshot.
	Store *balance.Store
	// RetryBudget limits retries; pass the same budget to successive
	// compilations of a port to carry it over. Nil: a new default budget
	// (20% of requests, burst 10).
	RetryBudget *RetryBudget
	// Observe, if set, is called once per request when it completes, for
	// metrics and access logs. It runs on the request's goroutine, so it
	// must be quick.
	Observe func(Result)
	// ReplayBuffer is the largest request body kept for a retry or a mirror.
	// Default 64 KiB.
	ReplayBuffer int
	// MaxMirrors bounds the mirrored requests in flight per table; further
	// mirrors are dropped. Default 64.
	MaxMirrors int
	// MirrorTimeout bounds a mirrored request when its rule sets no request
	// timeout. Default 10s.
	MirrorTimeout time.Duration
	// DefaultRetryBackoff is used when a rule's retry sets no backoff.
	// Default 25ms.
	DefaultRetryBackoff time.Duration
}

// Table is the compiled routing of one service port. It is immutable and safe
// for concurrent use; a new snapshot compiles a new Table.
type Table struct {
	port   uint16
	opts   Options
	budget *RetryBudget
	// unsent retries requests that never reached a backend when the rule
	// has no retry policy (see mayRetryUnsent).
	unsent retryPolicy

	exact  map[string][]*entry // by exact path
	prefix map[string][]*entry // by normalised prefix
	regex  []*entry
	all    []*entry // every entry in precedence order
	def    *rule    // the service's default backends

	mirrors atomic.Int64 // in flight
}

// entry is one HTTPRouteMatch of one rule, the unit of precedence.
type entry struct {
	rule       *rule
	hosts      []hostMatch // nil: any host
	kind       pathKind
	path       string // exact path, or normalised prefix
	rawLen     int    // length of the path value as written, for precedence
	re         *regexp.Regexp
	lit        string // literal prefix of re: a cheap test before running it
	method     string
	headers    []valueMatch
	query      []valueMatch
	routeRank  int
	matchIndex int
}

// rule is a compiled HTTPRouteRule, shared by its entries.
type rule struct {
	route string // Route.Source, "" for the default backends
	name  string
	index int

	reqHeaders  *meshconfig.HeaderModifier
	respHeaders *meshconfig.HeaderModifier
	rewrite     *meshconfig.URLRewrite
	redirect    *meshconfig.Redirect
	mirrors     []mirror

	backends []*backend
	cum      []uint64 // cumulative weights, parallel to backends
	total    uint64

	timeouts meshconfig.Timeouts
	retry    *retryPolicy
}

// backend is a weighted group of endpoints.
type backend struct {
	name   string // "namespace/name"
	weight uint32
	eps    []*balance.Endpoint
	rts    map[*balance.Endpoint]http.RoundTripper
}

type mirror struct {
	backend *backend
	percent uint32 // 1-100
}

// Compile builds the table of one service port. It fails on what the proxy
// cannot apply; the caller then keeps the previous table.
func Compile(port meshconfig.ServicePort, opts Options) (*Table, error) {
	if opts.Transport == nil {
		return nil, errors.New("route: Options.Transport is required")
	}
	if opts.Store == nil {
		opts.Store = balance.NewStore(balance.Config{})
	}
	if opts.ReplayBuffer <= 0 {
		opts.ReplayBuffer = 64 << 10
	}
	if opts.MaxMirrors <= 0 {
		opts.MaxMirrors = 64
	}
	if opts.MirrorTimeout <= 0 {
		opts.MirrorTimeout = 10 * time.Second
	}
	if opts.DefaultRetryBackoff <= 0 {
		opts.DefaultRetryBackoff = 25 * time.Millisecond
	}
	t := &Table{
		port:   port.Port,
		opts:   opts,
		budget: opts.RetryBudget,
		exact:  make(map[string][]*entry),
		prefix: make(map[string][]*entry),
	}
	if t.budget == nil {
		t.budget = NewRetryBudget(0, 0)
	}
	// Two more picks, as Istio's default retry policy on connect failures;
	// a short backoff, since the next endpoint is likely healthy.
	t.unsent = retryPolicy{attempts: unsentRetries, backoff: 5 * time.Millisecond}
	var err error
	if t.def, err = t.compileRule("", -1, meshconfig.RouteRule{Name: "default", Backends: port.DefaultBackends}); err != nil {
		return nil, fmt.Errorf("defaultBackends: %w", err)
	}
	ranks := routeRanks(port.Routes)
	for i, r := range port.Routes {
		hosts := compileHosts(r.Hostnames)
		if len(hosts) == 0 {
			hosts = nil
		}
		for j, rr := range r.Rules {
			ru, err := t.compileRule(r.Source, j, rr)
			if err != nil {
				return nil, fmt.Errorf("route %s rule %d: %w", r.Source, j, err)
			}
			matches := rr.Matches
			if len(matches) == 0 {
				// HTTPRouteRule: no matches means a PathPrefix "/" match.
				matches = []meshconfig.RouteMatch{{}}
			}
			for k, m := range matches {
				e, err := compileEntry(m)
				if err != nil {
					return nil, fmt.Errorf("route %s rule %d match %d: %w", r.Source, j, k, err)
				}
				e.rule, e.hosts, e.routeRank, e.matchIndex = ru, hosts, ranks[i], k
				t.all = append(t.all, e)
			}
		}
	}
	slices.SortStableFunc(t.all, compareEntries)
	for _, e := range t.all {
		switch e.kind {
		case pathExact:
			t.exact[e.path] = append(t.exact[e.path], e)
		case pathPrefix:
			t.prefix[e.path] = append(t.prefix[e.path], e)
		case pathRegex:
			t.regex = append(t.regex, e)
		}
	}
	return t, nil
}

func compileEntry(m meshconfig.RouteMatch) (*entry, error) {
	e := &entry{kind: pathPrefix, method: m.Method, rawLen: 1} // default: PathPrefix "/"
	if p := m.Path; p != nil {
		switch p.Type {
		case meshconfig.MatchExact:
			e.kind, e.path = pathExact, p.Value
		case meshconfig.MatchPathPrefix, "":
			e.path, e.rawLen = normalizePrefix(p.Value), len(p.Value)
		case meshconfig.MatchRegex:
			re, err := compileRegex(p.Value)
			if err != nil {
				return nil, fmt.Errorf("path: %w", err)
			}
			e.kind, e.re = pathRegex, re
			e.lit, _ = re.LiteralPrefix()
		default:
			return nil, fmt.Errorf("path: %w", errUnsupportedMatch(p.Type))
		}
	}
	var err error
	if e.headers, err = compileValues(m.Headers, true); err != nil {
		return nil, fmt.Errorf("headers: %w", err)
	}
	if e.query, err = compileValues(m.QueryParams, false); err != nil {
		return nil, fmt.Errorf("queryParams: %w", err)
	}
	return e, nil
}

func (t *Table) compileRule(source string, index int, rr meshconfig.RouteRule) (*rule, error) {
	ru := &rule{route: source, name: rr.Name, index: index, retry: compileRetry(rr.Retry, t.opts.DefaultRetryBackoff)}
	if rr.Timeouts != nil {
		ru.timeouts = *rr.Timeouts
	}
	for i, f := range rr.Filters {
		var missing bool
		switch f.Type {
		case meshconfig.FilterRequestHeaderModifier:
			ru.reqHeaders, missing = f.RequestHeaderModifier, f.RequestHeaderModifier == nil
		case meshconfig.FilterResponseHeaderModifier:
			ru.respHeaders, missing = f.ResponseHeaderModifier, f.ResponseHeaderModifier == nil
		case meshconfig.FilterURLRewrite:
			ru.rewrite, missing = f.URLRewrite, f.URLRewrite == nil
		case meshconfig.FilterRequestRedirect:
			ru.redirect, missing = f.RequestRedirect, f.RequestRedirect == nil
		case meshconfig.FilterRequestMirror:
			if missing = f.RequestMirror == nil; !missing {
				b := t.compileBackend(f.RequestMirror.Backend)
				pct := f.RequestMirror.Percent
				if pct == 0 || pct > 100 {
					pct = 100
				}
				ru.mirrors = append(ru.mirrors, mirror{backend: b, percent: pct})
			}
		default:
			return nil, fmt.Errorf("filter %d: unsupported type %q", i, f.Type)
		}
		if missing {
			return nil, fmt.Errorf("filter %d: type %s without its configuration", i, f.Type)
		}
	}
	for _, b := range rr.Backends {
		cb := t.compileBackend(b)
		ru.total += uint64(b.Weight)
		ru.backends = append(ru.backends, cb)
		ru.cum = append(ru.cum, ru.total)
	}
	return ru, nil
}

func (t *Table) compileBackend(b meshconfig.Backend) *backend {
	cb := &backend{name: b.Namespace + "/" + b.Name, weight: b.Weight, rts: make(map[*balance.Endpoint]http.RoundTripper, len(b.Endpoints))}
	for _, ep := range b.Endpoints {
		st := t.opts.Store.Endpoint(ep.Address)
		if _, dup := cb.rts[st]; dup {
			continue
		}
		cb.eps = append(cb.eps, st)
		cb.rts[st] = t.opts.Transport(ep)
	}
	return cb
}

// Addresses calls yield with every endpoint address the table can send to,
// for balance.Store.Retain.
func (t *Table) Addresses(yield func(addr string)) {
	seen := func(b *backend) {
		for _, e := range b.eps {
			yield(e.Addr())
		}
	}
	rules := []*rule{t.def}
	for _, e := range t.all {
		rules = append(rules, e.rule)
	}
	for _, r := range rules {
		for _, b := range r.backends {
			seen(b)
		}
		for _, m := range r.mirrors {
			seen(m.backend)
		}
	}
}

// match finds the entry of highest precedence that matches r, or nil. It is
// the routing decision and allocates nothing.
func (t *Table) match(r *http.Request) *entry {
	path := r.URL.Path
	if path == "" {
		path = "/"
	}
	// Exact paths outrank everything; regexes outrank prefixes; a longer
	// prefix outranks a shorter one. Within one bucket entries are already in
	// precedence order, so the first full match wins.
	if e := firstMatch(t.exact[path], r, path); e != nil {
		return e
	}
	if e := firstMatch(t.regex, r, path); e != nil {
		return e
	}
	if len(t.prefix) == 0 {
		return nil
	}
	// Walk the candidate prefixes of path from longest to shortest, at
	// segment boundaries only: that is the segment-wise PathPrefix rule.
	p := strings.TrimRight(path, "/")
	for {
		if e := firstMatch(t.prefix[p], r, path); e != nil {
			return e
		}
		if p == "" {
			return nil
		}
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return nil // not an absolute path ("*"): only Exact or regex match it
		}
		p = strings.TrimRight(p[:i], "/")
	}
}

func firstMatch(es []*entry, r *http.Request, path string) *entry {
	for _, e := range es {
		if e.matches(r, path) {
			return e
		}
	}
	return nil
}

// matches checks the conditions other than the bucketed path.
func (e *entry) matches(r *http.Request, path string) bool {
	if e.re != nil && (!strings.HasPrefix(path, e.lit) || !e.re.MatchString(path)) {
		return false
	}
	if e.method != "" && r.Method != e.method {
		return false
	}
	if e.hosts != nil && !hostMatches(e.hosts, r.Host) {
		return false
	}
	for i := range e.headers {
		if !e.headers[i].headerMatches(r.Header) {
			return false
		}
	}
	for i := range e.query {
		if !e.query[i].queryMatches(r.URL.RawQuery) {
			return false
		}
	}
	return true
}

// pickBackend draws a backend by weight; nil when every weight is 0.
func (ru *rule) pickBackend() *backend {
	if ru.total == 0 {
		return nil
	}
	n := rand.Uint64N(ru.total)
	for i, c := range ru.cum {
		if n < c {
			return ru.backends[i]
		}
	}
	return nil // unreachable: n < total == last cum
}
