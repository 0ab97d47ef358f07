package route

import (
	"cmp"
	"slices"
	"strings"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

// Precedence between matches of all rules of all routes of a port, from the
// Gateway API specification v1.x (HTTPRouteRule.Matches, apis/v1/httproute_types.go):
//
//	"Proxy or Load Balancer routing configuration generated from HTTPRoutes
//	MUST prioritize matches based on the following criteria, continuing on
//	ties. Across all rules specified on applicable Routes, precedence must be
//	given to the match having:
//	  * "Exact" path match.
//	  * "Prefix" path match with largest number of characters.
//	  * Method match.
//	  * Largest number of header matches.
//	  * Largest number of query param matches.
//	Note: The precedence of RegularExpression path matches are
//	implementation-specific.
//	If ties still exist across multiple Routes, matching precedence MUST be
//	determined in order of the following criteria, continuing on ties:
//	  * The oldest Route based on creation timestamp.
//	  * The Route appearing first in alphabetical order by "{namespace}/{name}".
//	If ties still exist within an HTTPRoute, matching precedence MUST be
//	granted to the FIRST matching rule (in list order) with a match meeting
//	the above criteria."
//
// Our choice for the implementation-specific part: a RegularExpression path
// ranks below every Exact path and above every PathPrefix, as in Envoy Gateway.
// Ranking it below prefixes would let the catch-all "/" of any rule shadow
// every regex, which nobody wants.
//
// Not applied: the hostname precedence of HTTPRouteSpec.Hostnames (most
// characters in a matching hostname first). In the GAMMA profile routes carry
// no hostnames; when they do we only filter on them.

// compareEntries orders a before b when a takes precedence.
func compareEntries(a, b *entry) int {
	if c := cmp.Compare(a.kind, b.kind); c != 0 { // Exact, then regex, then prefix
		return c
	}
	// Longest prefix. We bucket prefixes by their normalised form (a trailing
	// "/" ignored), so that length comes first; the spec counts characters
	// as written, so "/foo/" then ranks before "/foo" (they match the same
	// paths). The two only disagree for prefixes ending in several slashes.
	if c := cmp.Compare(len(b.path), len(a.path)); c != 0 {
		return c
	}
	if c := cmp.Compare(b.rawLen, a.rawLen); c != 0 {
		return c
	}
	if c := boolFirst(a.method != "", b.method != ""); c != 0 { // method match
		return c
	}
	if c := cmp.Compare(len(b.headers), len(a.headers)); c != 0 { // most headers
		return c
	}
	if c := cmp.Compare(len(b.query), len(a.query)); c != 0 { // most query params
		return c
	}
	if c := cmp.Compare(a.routeRank, b.routeRank); c != 0 { // oldest, then alphabetical
		return c
	}
	if c := cmp.Compare(a.rule.index, b.rule.index); c != 0 { // first rule
		return c
	}
	return cmp.Compare(a.matchIndex, b.matchIndex)
}

func boolFirst(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	default:
		return 1
	}
}

// routeRanks gives each route its rank among routes. The control plane sends
// routes ordered by creation time; when every route also carries its
// CreationTimestamp we re-derive the order ourselves so that equal timestamps
// fall back to "{namespace}/{name}" as the spec requires. Without timestamps
// the list order is the only truth we have.
func routeRanks(routes []meshconfig.Route) []int {
	idx := make([]int, len(routes))
	for i := range idx {
		idx[i] = i
	}
	all := true
	for _, r := range routes {
		if r.CreationTimestamp.IsZero() {
			all = false
			break
		}
	}
	if all {
		slices.SortStableFunc(idx, func(a, b int) int {
			ra, rb := &routes[a], &routes[b]
			if c := ra.CreationTimestamp.Compare(rb.CreationTimestamp); c != 0 {
				return c
			}
			return strings.Compare(namespacedName(ra.Source), namespacedName(rb.Source))
		})
	}
	rank := make([]int, len(routes))
	for r, i := range idx {
		rank[i] = r
	}
	return rank
}

// namespacedName strips the "Kind " prefix of Route.Source.
func namespacedName(source string) string {
	if _, nn, ok := strings.Cut(source, " "); ok {
		return nn
	}
	return source
}
