package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// AuthorizationAction is what a matching rule does.
// +kubebuilder:validation:Enum=Allow;Deny
type AuthorizationAction string

const (
	// ActionAllow allows matching requests. Once any Allow policy selects a
	// workload, requests that match none of its Allow rules are denied.
	ActionAllow AuthorizationAction = "Allow"
	// ActionDeny denies matching requests; Deny is evaluated before Allow.
	ActionDeny AuthorizationAction = "Deny"
)

// AuthorizationPolicySpec says who may call the targeted workloads, and how.
type AuthorizationPolicySpec struct {
	// targetRef selects the workloads: a Service (the pods behind it) or the
	// Namespace the policy lives in (every meshed workload in it). A Namespace
	// other than the policy's own is reported as Accepted=False (a schema rule
	// cannot see the object's namespace).
	// +required
	// +kubebuilder:validation:XValidation:rule="self.group == '' && (self.kind == 'Service' || self.kind == 'Namespace')",message="targetRef must be a Service or a Namespace (group \"\")"
	TargetRef gatewayv1.LocalPolicyTargetReference `json:"targetRef"`

	// action of the policy: Allow or Deny.
	// +optional
	// +kubebuilder:default=Allow
	Action AuthorizationAction `json:"action,omitempty"`

	// rules are ORed: a request matches the policy when it matches any rule.
	// An Allow policy with no rules selects its workloads and allows nothing;
	// a Deny policy with no rules denies nothing.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Rules []AuthorizationRule `json:"rules,omitempty"`
}

// AuthorizationRule matches a request when both its from and its to match; an
// empty list matches anything.
// +kubebuilder:validation:XValidation:rule="has(self.from) || has(self.to)",message="a rule needs at least one of from or to; to match every request leave rules empty in a Deny policy, or use from: [{identities: [\"*\"]}, {unauthenticated: true}]"
type AuthorizationRule struct {
	// from lists the callers, ORed.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	From []AuthorizationSource `json:"from,omitempty"`

	// to lists the operations, ORed.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	To []AuthorizationOperation `json:"to,omitempty"`
}

// SPIFFEID is a SPIFFE ID, or "*" for any authenticated mesh identity.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=512
// +kubebuilder:validation:XValidation:rule="self == '*' || (self.matches('^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)*$') && !self.matches('/[.][.]?(/|$)'))",message="identities must be SPIFFE IDs such as spiffe://cluster.local/ns/default/sa/web (lowercase trust domain, path segments of letters, digits, '.', '_' and '-', no '.' or '..' segments), or \"*\" for any authenticated identity"
type SPIFFEID string

// ServiceAccountRef names a ServiceAccount, whose pods' identity is
// spiffe://<trustDomain>/ns/<namespace>/sa/<name>.
type ServiceAccountRef struct {
	// name of the ServiceAccount.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="serviceAccounts[].name must be a ServiceAccount name (lowercase DNS subdomain)"
	Name string `json:"name"`
	// namespace of the ServiceAccount; the policy's namespace when empty.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="serviceAccounts[].namespace must be a namespace name (DNS label)"
	Namespace string `json:"namespace,omitempty"`
}

// AuthorizationSource is a set of callers. Its non-empty fields are ANDed;
// values within one field are ORed.
// +kubebuilder:validation:XValidation:rule="!has(self.unauthenticated) || !self.unauthenticated || (!has(self.identities) && !has(self.namespaces) && !has(self.serviceAccounts))",message="unauthenticated callers have no identity: unauthenticated cannot be combined with identities, namespaces or serviceAccounts"
// +kubebuilder:validation:XValidation:rule="has(self.identities) || has(self.namespaces) || has(self.serviceAccounts) || (has(self.unauthenticated) && self.unauthenticated)",message="a from entry needs identities, namespaces, serviceAccounts or unauthenticated: true"
type AuthorizationSource struct {
	// identities of callers (SPIFFE IDs), or "*" for any mesh identity.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Identities []SPIFFEID `json:"identities,omitempty"`

	// namespaces of callers (meshed callers only).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="namespaces must be namespace names (DNS labels)"
	Namespaces []string `json:"namespaces,omitempty"`

	// serviceAccounts of callers.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	ServiceAccounts []ServiceAccountRef `json:"serviceAccounts,omitempty"`

	// unauthenticated matches plaintext callers (only reachable in Permissive
	// mTLS mode).
	// +optional
	Unauthenticated bool `json:"unauthenticated,omitempty"`
}

// AuthorizationPathType is how a path is matched.
// +kubebuilder:validation:Enum=Exact;PathPrefix
type AuthorizationPathType string

// AuthorizationPathMatch matches the normalized request path: repeated slashes
// merged, dot segments resolved, percent-encoded unreserved characters
// decoded, so that one resource has one spelling.
type AuthorizationPathMatch struct {
	// type is Exact or PathPrefix (segment-wise: /api matches /api and
	// /api/x, not /apix).
	// +optional
	// +kubebuilder:default=PathPrefix
	Type AuthorizationPathType `json:"type,omitempty"`
	// value is an absolute path.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="paths[].value must start with '/'"
	// +kubebuilder:validation:XValidation:rule="!self.contains('//') && !self.matches('/[.][.]?(/|$)') && !self.contains('?') && !self.contains('#')",message="paths[].value must be a normalized path: no '//', '.' or '..' segments, query or fragment"
	Value string `json:"value"`
}

// AuthorizationOperation is a set of requests. Its non-empty fields are ANDed;
// values within one field are ORed. methods and paths only match HTTP
// traffic: on a port carrying opaque TCP they never match an Allow and always
// match a Deny (fail closed).
// +kubebuilder:validation:XValidation:rule="has(self.ports) || has(self.methods) || has(self.paths)",message="a to entry needs ports, methods or paths"
type AuthorizationOperation struct {
	// ports are the workload's (container) ports.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	Ports []int32 `json:"ports,omitempty"`

	// methods are HTTP methods.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=9
	Methods []gatewayv1.HTTPMethod `json:"methods,omitempty"`

	// paths match the normalized request path.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Paths []AuthorizationPathMatch `json:"paths,omitempty"`
}

// AuthorizationPolicyStatus is what the control plane observed.
type AuthorizationPolicyStatus struct {
	// observedGeneration is the generation the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Accepted, ResolvedRefs.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// proxies shows how many of the targeted workloads' proxies enforce the
	// current generation.
	// +optional
	Proxies ProxyAdoption `json:"proxies,omitempty,omitzero"`
}

// AuthorizationPolicy allows or denies calls to meshed workloads by caller
// identity and, for HTTP, by method and path.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=wap,categories=weft
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Applied",type=integer,JSONPath=`.status.proxies.applied`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AuthorizationPolicy struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired policy.
	// +required
	Spec AuthorizationPolicySpec `json:"spec"`

	// status is what the control plane observed.
	// +optional
	Status AuthorizationPolicyStatus `json:"status,omitempty,omitzero"`
}

// AuthorizationPolicyList is a list of AuthorizationPolicy.
//
// +kubebuilder:object:root=true
type AuthorizationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AuthorizationPolicy `json:"items"`
}

func init() {
	SchemeBuilder.Register(&AuthorizationPolicy{}, &AuthorizationPolicyList{})
}
