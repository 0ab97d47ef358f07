package meshconfig

import "time"

// The route types carry Gateway API HTTPRoute semantics (GAMMA mesh profile)
// and TrafficSplit matches without importing Gateway API: the proxy must not
// depend on k8s.io. Field names follow Gateway API so that the compiler's
// mapping is obvious.

// Route is one compiled HTTPRoute or TrafficSplit attached to a service port.
type Route struct {
	// Source is "Kind namespace/name" of the object it came from.
	Source string `json:"source"`
	// Generation of that object, so a proxy's ack says which generation it applied.
	Generation int64 `json:"generation,omitempty"`
	// CreationTimestamp of that object. Gateway API breaks precedence ties
	// between routes by age, then by "namespace/name"; when every route of a
	// port carries it the proxy applies both, otherwise it keeps list order.
	CreationTimestamp time.Time `json:"creationTimestamp,omitzero"`
	// Hostnames restrict the route to requests for these hosts; empty matches all.
	Hostnames []string    `json:"hostnames,omitempty"`
	Rules     []RouteRule `json:"rules"`
}

// RouteRule is one rule of a route.
type RouteRule struct {
	// Name of the rule, if any, for metrics and diagnostics.
	Name string `json:"name,omitempty"`
	// Matches are ORed; an empty list matches every request (PathPrefix "/").
	Matches []RouteMatch `json:"matches,omitempty"`
	Filters []Filter     `json:"filters,omitempty"`
	// Backends are weighted; an empty list or all weights 0 answers 500.
	Backends []Backend `json:"backends,omitempty"`
	Timeouts *Timeouts `json:"timeouts,omitempty"`
	Retry    *Retry    `json:"retry,omitempty"`
}

// RouteMatch is Gateway API's HTTPRouteMatch: all its conditions are ANDed.
type RouteMatch struct {
	Path        *PathMatch   `json:"path,omitempty"`
	Headers     []ValueMatch `json:"headers,omitempty"`
	QueryParams []ValueMatch `json:"queryParams,omitempty"`
	Method      string       `json:"method,omitempty"`
}

// MatchType is Exact, PathPrefix or RegularExpression.
type MatchType string

const (
	MatchExact      MatchType = "Exact"
	MatchPathPrefix MatchType = "PathPrefix"
	MatchRegex      MatchType = "RegularExpression"
)

// PathMatch matches the request path.
type PathMatch struct {
	Type  MatchType `json:"type"`
	Value string    `json:"value"`
}

// ValueMatch matches a header (name case-insensitive) or a query parameter
// (name case-sensitive).
type ValueMatch struct {
	Type  MatchType `json:"type"`
	Name  string    `json:"name"`
	Value string    `json:"value"`
}

// FilterType names a Gateway API HTTPRouteFilter type.
type FilterType string

const (
	FilterRequestHeaderModifier  FilterType = "RequestHeaderModifier"
	FilterResponseHeaderModifier FilterType = "ResponseHeaderModifier"
	FilterURLRewrite             FilterType = "URLRewrite"
	FilterRequestRedirect        FilterType = "RequestRedirect"
	FilterRequestMirror          FilterType = "RequestMirror"
)

// Filter is one HTTPRouteFilter; exactly the field named by Type is set.
type Filter struct {
	Type                   FilterType      `json:"type"`
	RequestHeaderModifier  *HeaderModifier `json:"requestHeaderModifier,omitempty"`
	ResponseHeaderModifier *HeaderModifier `json:"responseHeaderModifier,omitempty"`
	URLRewrite             *URLRewrite     `json:"urlRewrite,omitempty"`
	RequestRedirect        *Redirect       `json:"requestRedirect,omitempty"`
	RequestMirror          *Mirror         `json:"requestMirror,omitempty"`
}

// Header is a name and a value.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HeaderModifier sets, adds and removes headers.
type HeaderModifier struct {
	Set    []Header `json:"set,omitempty"`
	Add    []Header `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

// PathModifierType is ReplaceFullPath or ReplacePrefixMatch.
type PathModifierType string

const (
	ReplaceFullPath    PathModifierType = "ReplaceFullPath"
	ReplacePrefixMatch PathModifierType = "ReplacePrefixMatch"
)

// PathModifier rewrites the path.
type PathModifier struct {
	Type  PathModifierType `json:"type"`
	Value string           `json:"value"`
}

// URLRewrite rewrites the host and/or path sent upstream.
type URLRewrite struct {
	Hostname string        `json:"hostname,omitempty"`
	Path     *PathModifier `json:"path,omitempty"`
}

// Redirect answers with a redirect instead of forwarding.
type Redirect struct {
	Scheme     string        `json:"scheme,omitempty"`
	Hostname   string        `json:"hostname,omitempty"`
	Path       *PathModifier `json:"path,omitempty"`
	Port       uint16        `json:"port,omitempty"`
	StatusCode int           `json:"statusCode,omitempty"`
}

// Mirror copies requests to another backend; its answers are discarded.
type Mirror struct {
	Backend Backend `json:"backend"`
	// Percent of requests mirrored, 0-100; 0 means 100.
	Percent uint32 `json:"percent,omitempty"`
}

// Timeouts is Gateway API's HTTPRouteTimeouts.
type Timeouts struct {
	// Request bounds the whole request including retries.
	Request Duration `json:"request,omitempty"`
	// BackendRequest bounds one attempt.
	BackendRequest Duration `json:"backendRequest,omitempty"`
}

// Retry is Gateway API's HTTPRouteRetry (GEP-1731).
type Retry struct {
	// Codes are the response status codes that are retried.
	Codes []int `json:"codes,omitempty"`
	// Attempts is the maximum number of retries (not counting the first try).
	// 0 means the proxy's default, 1; to disable retries, omit Retry.
	Attempts int `json:"attempts,omitempty"`
	// Backoff is the base of the exponential backoff between attempts; 0
	// means the proxy's default (25ms).
	Backoff Duration `json:"backoff,omitempty"`
}
