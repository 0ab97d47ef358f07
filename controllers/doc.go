// Package controllers holds the operator's reconcilers: the MeshControlPlane
// lifecycle (install, certificates, status) and the rollout of proxies on
// upgrade. They own the mesh's lifecycle, never its traffic: nothing here is on
// a request path, and the mesh keeps serving while the operator is down.
//
// The RBAC markers below are the operator's whole ClusterRole; `make manifests`
// renders them into config/rbac/role.yaml. No wildcards.
//
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=meshcontrolplanes,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=meshcontrolplanes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=meshcontrolplanes/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
package controllers
