package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// TrafficSplitSpec splits the traffic sent to a root Service across weighted
// backend Services, optionally only for requests that match.
type TrafficSplitSpec struct {
	// service is the name of the root Service, in the TrafficSplit's
	// namespace, that clients address. Immutable: moving a split to another
	// service would shift two services' traffic at once; create a new
	// TrafficSplit instead.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="service must be the name of a Service (a DNS label starting with a letter)"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="service is immutable: create a new TrafficSplit for another service"
	Service string `json:"service"`

	// backends receive the traffic in proportion to their weights (a weight
	// of 0 receives nothing). Each is a Service in the same namespace.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(b, (!has(b.group) || b.group == '') && (!has(b.kind) || b.kind == 'Service'))",message="backends must be Services (group \"\" and kind Service)"
	// +kubebuilder:validation:XValidation:rule="self.all(b, self.exists_one(c, c.name == b.name && (has(c.port) ? c.port : 0) == (has(b.port) ? b.port : 0)))",message="backends must be unique: the same Service and port appear more than once"
	// +kubebuilder:validation:XValidation:rule="self.all(b, !has(b.__namespace__))",message="backends must be in the TrafficSplit's own namespace: leave backends[].namespace unset"
	Backends []gatewayv1.BackendRef `json:"backends"`

	// matches restrict the split to HTTP requests matching any of them (Gateway
	// API HTTPRouteMatch semantics); other requests go to the root service.
	// Empty means every request.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	Matches []gatewayv1.HTTPRouteMatch `json:"matches,omitempty"`
}

// ProxyAdoption is how many proxies have applied an object's current
// generation, out of those it concerns.
type ProxyAdoption struct {
	// applied is the number of proxies that acknowledged a configuration
	// containing the current generation.
	// +optional
	Applied int32 `json:"applied"`
	// total is the number of proxies the object concerns.
	// +optional
	Total int32 `json:"total"`
}

// TrafficSplitStatus is what the control plane observed.
type TrafficSplitStatus struct {
	// observedGeneration is the generation the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Accepted, ResolvedRefs.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// proxies shows how many client proxies apply the current generation.
	// +optional
	Proxies ProxyAdoption `json:"proxies,omitempty,omitzero"`
}

// TrafficSplit divides the traffic for a Service between weighted backends,
// for canaries and blue/green rollouts.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=wts,categories=weft
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.service`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Applied",type=integer,JSONPath=`.status.proxies.applied`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type TrafficSplit struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired split.
	// +required
	Spec TrafficSplitSpec `json:"spec"`

	// status is what the control plane observed.
	// +optional
	Status TrafficSplitStatus `json:"status,omitempty,omitzero"`
}

// TrafficSplitList is a list of TrafficSplit.
//
// +kubebuilder:object:root=true
type TrafficSplitList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrafficSplit `json:"items"`
}

func init() {
	SchemeBuilder.Register(&TrafficSplit{}, &TrafficSplitList{})
}
