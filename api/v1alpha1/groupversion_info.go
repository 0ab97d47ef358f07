// Package v1alpha1 holds the mesh.weft.dev/v1alpha1 API: MeshControlPlane,
// TrafficSplit and AuthorizationPolicy, with the validation (OpenAPI and CEL)
// that the API server enforces before an object is stored.
//
// It owns types, markers, defaults and condition vocabulary; it must not hold
// reconciliation logic.
//
// +kubebuilder:object:generate=true
// +groupName=mesh.weft.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of these types.
	GroupVersion = schema.GroupVersion{Group: "mesh.weft.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types in this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
