package meshconfig

// Authorization types: compiled AuthorizationPolicy objects that select the
// proxy's workload. Identities, namespaces and service accounts are already
// resolved to SPIFFE ID patterns by the compiler where possible.

// Action of a policy.
type Action string

const (
	ActionAllow Action = "Allow"
	ActionDeny  Action = "Deny"
)

// AuthorizationPolicy is one compiled policy.
type AuthorizationPolicy struct {
	// Source is "namespace/name" of the AuthorizationPolicy.
	Source     string `json:"source"`
	Generation int64  `json:"generation,omitempty"`
	Action     Action `json:"action"`
	// Ports limits the policy to these inbound (container) ports; empty means
	// every port of the workload.
	Ports []uint16 `json:"ports,omitempty"`
	// Rules are ORed. An Allow policy with no rules allows nothing; a Deny
	// policy with no rules denies nothing.
	Rules []AuthorizationRule `json:"rules,omitempty"`
}

// AuthorizationRule matches when its From and its To both match (an empty list
// matches everything).
type AuthorizationRule struct {
	From []Source    `json:"from,omitempty"`
	To   []Operation `json:"to,omitempty"`
}

// Source is a set of callers; its non-empty fields are ANDed, values within a
// field ORed.
type Source struct {
	// Identities are SPIFFE IDs, or "*" for any authenticated identity.
	Identities      []string `json:"identities,omitempty"`
	Namespaces      []string `json:"namespaces,omitempty"`
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`
	// Unauthenticated matches plaintext callers.
	Unauthenticated bool `json:"unauthenticated,omitempty"`
}

// Operation is a set of requests; its non-empty fields are ANDed, values within
// a field ORed. Methods and Paths only match HTTP traffic: on an opaque port a
// rule that needs them never matches an Allow and always matches a Deny (fail
// closed).
type Operation struct {
	Ports   []uint16    `json:"ports,omitempty"`
	Methods []string    `json:"methods,omitempty"`
	Paths   []PathMatch `json:"paths,omitempty"`
}
