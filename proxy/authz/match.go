package authz

import "strings"

// allowPathMatches is Gateway API's segment-wise matching, case-sensitive.
func allowPathMatches(pm *pathMatch, p string) bool {
	if !pm.prefix {
		return p == pm.value
	}
	if !strings.HasPrefix(p, pm.value) {
		return false
	}
	return len(p) == len(pm.value) || p[len(pm.value)] == '/'
}

// denyPathMatches matches more than allowPathMatches so that no spelling an
// application may treat as the same resource escapes a Deny: ASCII case is
// ignored, ";params" in any segment of the request are skipped, and an Exact
// value also matches with one trailing slash.
func denyPathMatches(pm *pathMatch, p string) bool {
	v := pm.value
	if pm.prefix && v == "" {
		return true
	}
	i, j := 0, 0
	for i < len(v) {
		if j >= len(p) {
			return false
		}
		if p[j] == ';' {
			j = skipParams(p, j)
			continue
		}
		if lower(p[j]) != lower(v[i]) {
			return false
		}
		i++
		j++
	}
	if j < len(p) && p[j] == ';' {
		j = skipParams(p, j)
	}
	if j == len(p) {
		return true
	}
	if p[j] != '/' {
		return false
	}
	return pm.prefix || j == len(p)-1
}

func skipParams(p string, j int) int {
	for j < len(p) && p[j] != '/' {
		j++
	}
	return j
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// ParseWorkloadID splits "spiffe://<td>/ns/<ns>/sa/<sa>" without allocating.
// When trustDomain is set, an ID of another trust domain does not parse: a
// federated caller is not in our namespaces.
func ParseWorkloadID(id, trustDomain string) (ns, sa string, ok bool) {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return "", "", false
	}
	slash := strings.IndexByte(rest, '/')
	if slash <= 0 {
		return "", "", false
	}
	if trustDomain != "" && rest[:slash] != trustDomain {
		return "", "", false
	}
	rest, ok = strings.CutPrefix(rest[slash:], "/ns/")
	if !ok {
		return "", "", false
	}
	ns, rest, ok = strings.Cut(rest, "/")
	if !ok || ns == "" {
		return "", "", false
	}
	sa, ok = strings.CutPrefix(rest, "sa/")
	if !ok || sa == "" || strings.IndexByte(sa, '/') >= 0 {
		return "", "", false
	}
	return ns, sa, true
}
