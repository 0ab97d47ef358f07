// Package controllers holds the operator's reconcilers: the MeshControlPlane
// lifecycle (install, certificates, status) and the rollout of proxies on
// upgrade. They own the mesh's lifecycle, never its traffic: nothing here is on
// a request path, and the mesh keeps serving while the operator is down.
//
// Layout: meshcontrolplane_controller.go wires the reconciler and writes
// status once per reconcile; meshcontrolplane_phases.go runs the install
// phases; render.go builds every owned object as a pure function of the
// spec (golden files in testdata/render); certificates.go and pki.go keep
// the trust anchor, issuer and webhook certificate; rollout.go moves proxies
// to a new revision; meshcontrolplane_status.go turns what was observed into
// conditions.
//
// The webhook's caBundle is the mesh trust bundle, written by the operator
// into a MutatingWebhookConfiguration that only the operator creates: it is
// not in anyone's Git, so GitOps tools never see it drift. The bundle only
// changes when the trust anchor rotates (the issuer and the serving
// certificate renew under the same roots), and then holds the old and the
// new root until the old one expires.
//
// The RBAC markers below are the operator's whole ClusterRole; `make manifests`
// renders them into config/rbac/role.yaml. No wildcards.
//
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=meshcontrolplanes,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=meshcontrolplanes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=meshcontrolplanes/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
//
// What the operator creates and manages:
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch;create
// +kubebuilder:rbac:groups="",resources=serviceaccounts;services;secrets;configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles;clusterrolebindings;roles;rolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=cert-manager.io,resources=certificates,verbs=get;list;watch;create;update;patch;delete
//
// The rollout: it reads meshed pods and their owners and patches the
// workloads' pod templates.
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=replicasets,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=statefulsets;daemonsets,verbs=get;list;watch;patch
//
// Held only so that the operator may grant them to the control plane's
// ClusterRole and Role (Kubernetes refuses to grant what the granter lacks,
// and the alternative, the escalate verb, would let it grant anything).
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=trafficsplits;authorizationpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=trafficsplits/status;authorizationpolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch
package controllers
