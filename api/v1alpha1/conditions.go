package v1alpha1

// Condition types.
const (
	// ConditionReady summarises a MeshControlPlane: the control plane serves
	// proxies, certificates are valid, injection works.
	ConditionReady = "Ready"
	// ConditionProgressing is True while the operator is changing something
	// (installing, rotating, upgrading).
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when something needs a person: a failed
	// upgrade batch, a certificate that cannot be issued.
	ConditionDegraded = "Degraded"
	// ConditionUpgradeInProgress is True from a version change until every
	// workload runs the new version and the old revision is gone.
	ConditionUpgradeInProgress = "UpgradeInProgress"

	// ConditionAccepted says a TrafficSplit or AuthorizationPolicy is valid
	// and in force (the Gateway API condition of the same name for routes).
	ConditionAccepted = "Accepted"
	// ConditionResolvedRefs says every object referenced exists.
	ConditionResolvedRefs = "ResolvedRefs"
)

// Reasons for MeshControlPlane conditions.
const (
	ReasonInstalled            = "Installed"
	ReasonInstalling           = "Installing"
	ReasonReconciling          = "Reconciling"
	ReasonConflict             = "Conflict"
	ReasonUnknownVersion       = "UnknownVersion"
	ReasonControlPlaneNotReady = "ControlPlaneNotReady"
	ReasonIssuerNotReady       = "IssuerNotReady"
	ReasonCertificateExpiring  = "CertificateExpiring"
	ReasonRotatingTrustAnchor  = "RotatingTrustAnchor"
	ReasonApplyFailed          = "ApplyFailed"
	ReasonAsExpected           = "AsExpected"
	ReasonUpgradeStarted       = "UpgradeStarted"
	ReasonRevisionStarting     = "RevisionStarting"
	ReasonRestartingWorkloads  = "RestartingWorkloads"
	ReasonUpgradePaused        = "UpgradePaused"
	ReasonBatchFailed          = "BatchFailed"
	ReasonRemovingOldRevision  = "RemovingOldRevision"
	ReasonUpgradeComplete      = "UpgradeComplete"
	ReasonNoUpgrade            = "NoUpgrade"
)

// Reasons for TrafficSplit and AuthorizationPolicy conditions (the Gateway API
// vocabulary where one exists).
const (
	ReasonAccepted         = "Accepted"
	ReasonInvalid          = "Invalid"
	ReasonOverridden       = "OverriddenByHTTPRoute"
	ReasonResolvedRefs     = "ResolvedRefs"
	ReasonBackendNotFound  = "BackendNotFound"
	ReasonServiceNotFound  = "ServiceNotFound"
	ReasonTargetNotFound   = "TargetNotFound"
	ReasonUnsupportedKind  = "UnsupportedKind"
	ReasonRefNotPermitted  = "RefNotPermitted"
	ReasonNoMatchingParent = "NoMatchingParent"
)

// Annotations and labels the mesh reads or writes on users' objects.
const (
	// LabelInject on a Namespace or annotation on a Pod: enabled|disabled.
	LabelInject = "mesh.weft.dev/inject"
	// AnnotationDefaultPolicy on a Namespace overrides the mesh's default
	// authorization policy: Allow|Deny|Authenticated.
	AnnotationDefaultPolicy = "mesh.weft.dev/default-policy"
	// LabelRevision on a meshed Pod names the control-plane revision that
	// injected it.
	LabelRevision = "mesh.weft.dev/revision"
)

// ControllerName is the Gateway API controller name with which the control
// plane writes HTTPRoute status.parents.
const ControllerName = "mesh.weft.dev/controlplane"
