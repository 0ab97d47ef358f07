package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// MeshControlPlaneSpec is the desired state of the whole mesh.
type MeshControlPlaneSpec struct {
	// version of Weft to run, as vMAJOR.MINOR.PATCH. Changing it upgrades (or
	// downgrades) the mesh: a new control-plane revision starts beside the old
	// one, then meshed workloads are restarted in batches (see upgrade).
	// +required
	// +kubebuilder:validation:MinLength=6
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^v(0|[1-9][0-9]*)[.](0|[1-9][0-9]*)[.](0|[1-9][0-9]*)$')",message="version must look like v1.2.3 (vMAJOR.MINOR.PATCH, no leading zeros, no pre-release suffix)"
	Version string `json:"version"`

	// trustDomain is the SPIFFE trust domain of every workload identity
	// (spiffe://<trustDomain>/ns/<namespace>/sa/<serviceaccount>).
	// Immutable: changing it would invalidate every identity that running
	// proxies hold and break mTLS between them; create a new mesh instead.
	// +optional
	// +kubebuilder:default="cluster.local"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="trustDomain must be a lowercase DNS name such as cluster.local"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="trustDomain is immutable: changing it would invalidate the identity of every running proxy"
	TrustDomain string `json:"trustDomain,omitempty"`

	// namespace the control plane runs in. Immutable: running proxies are
	// configured with the control plane's address in this namespace.
	// +optional
	// +kubebuilder:default="weft-system"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="namespace must be a DNS label (lowercase letters, digits and '-')"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="namespace is immutable: running proxies reach the control plane in this namespace"
	Namespace string `json:"namespace,omitempty"`

	// mtls sets how strictly mutual TLS is required between meshed pods.
	// +optional
	// +kubebuilder:default={mode: Strict}
	MTLS MTLSSpec `json:"mtls,omitempty,omitzero"`

	// identity chooses where workload certificates come from: exactly one of
	// builtInCA or certManager.
	// +optional
	// +kubebuilder:default={builtInCA: {}}
	Identity IdentitySpec `json:"identity,omitempty,omitzero"`

	// proxy holds the defaults for every injected proxy.
	// +optional
	// +kubebuilder:default={}
	Proxy ProxySpec `json:"proxy,omitempty,omitzero"`

	// injection chooses which pods get a proxy.
	// +optional
	// +kubebuilder:default={}
	Injection InjectionSpec `json:"injection,omitempty,omitzero"`

	// authorization sets the mesh-wide default for workloads that no
	// AuthorizationPolicy selects.
	// +optional
	// +kubebuilder:default={}
	Authorization AuthorizationDefaultsSpec `json:"authorization,omitempty,omitzero"`

	// upgrade controls how workloads move to a new version.
	// +optional
	// +kubebuilder:default={}
	Upgrade UpgradeSpec `json:"upgrade,omitempty,omitzero"`

	// observability configures metrics and access logs.
	// +optional
	// +kubebuilder:default={}
	Observability ObservabilitySpec `json:"observability,omitempty,omitzero"`

	// registry overrides the registry of every Weft image (for mirrors and
	// air-gapped clusters), e.g. registry.example.com/weft.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="!self.contains(' ') && !self.endsWith('/') && !self.contains('://')",message="registry must be a host and optional path without scheme, spaces or trailing slash, e.g. registry.example.com/weft"
	Registry string `json:"registry,omitempty"`
}

// MTLSMode says whether plaintext traffic between pods is accepted.
// +kubebuilder:validation:Enum=Strict;Permissive
type MTLSMode string

const (
	// MTLSStrict: meshed pods accept only mutual TLS from other meshed pods.
	MTLSStrict MTLSMode = "Strict"
	// MTLSPermissive: meshed pods also accept plaintext (as unauthenticated
	// callers), for migrating a namespace into the mesh.
	MTLSPermissive MTLSMode = "Permissive"
)

// MTLSSpec configures mutual TLS.
type MTLSSpec struct {
	// mode is Strict (only mTLS) or Permissive (mTLS and plaintext).
	// +optional
	// +kubebuilder:default=Strict
	Mode MTLSMode `json:"mode,omitempty"`
}

// IdentitySpec chooses the certificate authority for workload identities and
// the lifetimes of the certificates it issues.
// +kubebuilder:validation:XValidation:rule="has(self.builtInCA) != has(self.certManager)",message="identity needs exactly one of builtInCA or certManager"
// +kubebuilder:validation:XValidation:rule="!has(self.issuerLifetime) || !has(self.leafLifetime) || duration(self.issuerLifetime) > duration(self.leafLifetime)",message="identity.issuerLifetime must be longer than identity.leafLifetime"
type IdentitySpec struct {
	// builtInCA makes the operator create and rotate a trust anchor and an
	// issuer itself, stored as Secrets in the control-plane namespace.
	// +optional
	BuiltInCA *BuiltInCASpec `json:"builtInCA,omitempty"`

	// certManager makes the operator request the issuer certificate from a
	// cert-manager Issuer or ClusterIssuer, and reload it when renewed.
	// +optional
	CertManager *CertManagerSpec `json:"certManager,omitempty"`

	// issuerLifetime is the lifetime of the intermediate issuer certificate.
	// +optional
	// +kubebuilder:default="8760h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('24h') && duration(self) <= duration('87600h')",message="identity.issuerLifetime must be between 24h and 87600h (10 years)"
	IssuerLifetime metav1.Duration `json:"issuerLifetime,omitempty,omitzero"`

	// leafLifetime is the lifetime of each proxy's workload certificate. Proxies
	// renew at 70% of it.
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1h') && duration(self) <= duration('168h')",message="identity.leafLifetime must be between 1h and 168h (7 days)"
	LeafLifetime metav1.Duration `json:"leafLifetime,omitempty,omitzero"`
}

// BuiltInCASpec configures the operator's own certificate authority.
type BuiltInCASpec struct {
	// trustAnchorLifetime is the lifetime of the self-signed root. The
	// operator rotates it with an overlap before it expires.
	// +optional
	// +kubebuilder:default="87600h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('720h') && duration(self) <= duration('175200h')",message="builtInCA.trustAnchorLifetime must be between 720h (30 days) and 175200h (20 years)"
	TrustAnchorLifetime metav1.Duration `json:"trustAnchorLifetime,omitempty,omitzero"`
}

// IssuerKind is the kind of a cert-manager issuer.
// +kubebuilder:validation:Enum=Issuer;ClusterIssuer
type IssuerKind string

// CertManagerSpec points at a cert-manager issuer that signs the mesh's
// intermediate (issuer) certificate.
type CertManagerSpec struct {
	// issuerRef names the cert-manager Issuer (in the control-plane namespace)
	// or ClusterIssuer.
	// +required
	IssuerRef IssuerReference `json:"issuerRef"`
}

// IssuerReference names a cert-manager issuer.
type IssuerReference struct {
	// name of the issuer.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// kind is Issuer or ClusterIssuer.
	// +optional
	// +kubebuilder:default=Issuer
	Kind IssuerKind `json:"kind,omitempty"`

	// group of the issuer; cert-manager.io unless an external issuer is used.
	// +optional
	// +kubebuilder:default="cert-manager.io"
	// +kubebuilder:validation:MaxLength=253
	Group string `json:"group,omitempty"`
}

// LogLevel of the proxy.
// +kubebuilder:validation:Enum=error;warn;info;debug
type LogLevel string

// ProxySpec holds the defaults for injected proxies. Pod annotations override
// resources and skipped ports per workload.
type ProxySpec struct {
	// resources of the proxy container.
	// +optional
	// +kubebuilder:default={requests: {cpu: "10m", memory: "20Mi"}, limits: {memory: "128Mi"}}
	Resources corev1.ResourceRequirements `json:"resources,omitempty,omitzero"`

	// concurrency is how many threads run the proxy's code (its
	// GOMAXPROCS). Unset, a proxy uses its CPU limit rounded up, or 1
	// without a limit: one thread serves thousands of requests a second,
	// and every thread more costs CPU in wake-ups. A pod's annotations
	// override it: mesh.weft.dev/proxy-concurrency, or
	// mesh.weft.dev/proxy-cpu-limit (the proxy then follows its limit).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	Concurrency int32 `json:"concurrency,omitempty"`

	// logLevel of the proxy.
	// +optional
	// +kubebuilder:default=info
	LogLevel LogLevel `json:"logLevel,omitempty"`

	// skipInboundPorts are pod ports whose incoming traffic bypasses the proxy.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	SkipInboundPorts []int32 `json:"skipInboundPorts,omitempty"`

	// skipOutboundPorts are destination ports whose outgoing traffic bypasses
	// the proxy.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	SkipOutboundPorts []int32 `json:"skipOutboundPorts,omitempty"`

	// opaquePorts carry protocols that the proxy forwards as bytes without
	// detection: server-first protocols (SMTP, MySQL, PostgreSQL...) whose
	// client sends nothing until the server speaks. Still mTLS-protected.
	// +optional
	// +listType=set
	// +kubebuilder:default={25,587,3306,4444,5432,6379,9300,11211}
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	OpaquePorts []int32 `json:"opaquePorts,omitempty"`
}

// FailurePolicy of the injection webhook.
// +kubebuilder:validation:Enum=Ignore;Fail
type FailurePolicy string

const (
	// FailurePolicyIgnore admits pods unmeshed while the injector is down; the
	// operator then reports them as missed pods.
	FailurePolicyIgnore FailurePolicy = "Ignore"
	// FailurePolicyFail refuses to create pods while the injector is down.
	FailurePolicyFail FailurePolicy = "Fail"
)

// MissedPodsAction says what to do with pods that run without a proxy in a
// namespace selected for injection.
// +kubebuilder:validation:Enum=Report;Restart
type MissedPodsAction string

const (
	// MissedPodsReport lists them in status and Events.
	MissedPodsReport MissedPodsAction = "Report"
	// MissedPodsRestart also restarts their owners so that they are injected.
	MissedPodsRestart MissedPodsAction = "Restart"
)

// InjectionSpec chooses which pods get a proxy.
type InjectionSpec struct {
	// namespaceSelector selects the namespaces whose pods are injected. Pods
	// opt in or out with the annotation mesh.weft.dev/inject: enabled|disabled.
	// kube-system, kube-public and the control-plane namespace are never
	// injected.
	// +optional
	// +kubebuilder:default={matchLabels: {"mesh.weft.dev/inject": "enabled"}}
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// failurePolicy of the webhook when the injector cannot be reached. Ignore
	// (the default) keeps pods starting during a control-plane outage and
	// reports the pods that missed injection; Fail blocks them instead.
	// +optional
	// +kubebuilder:default=Ignore
	FailurePolicy FailurePolicy `json:"failurePolicy,omitempty"`

	// missedPods: Report lists pods that run without a proxy in selected
	// namespaces; Restart also restarts their owners so that they get one.
	// +optional
	// +kubebuilder:default=Report
	MissedPods MissedPodsAction `json:"missedPods,omitempty"`
}

// DefaultPolicy is what happens to a request for a workload that no
// AuthorizationPolicy selects.
// +kubebuilder:validation:Enum=Allow;Deny;Authenticated
type DefaultPolicy string

const (
	// DefaultPolicyAllow allows every caller.
	DefaultPolicyAllow DefaultPolicy = "Allow"
	// DefaultPolicyDeny denies every caller (default-deny).
	DefaultPolicyDeny DefaultPolicy = "Deny"
	// DefaultPolicyAuthenticated allows callers with any mesh identity.
	DefaultPolicyAuthenticated DefaultPolicy = "Authenticated"
)

// AuthorizationDefaultsSpec sets the mesh-wide authorization default. A
// namespace annotation mesh.weft.dev/default-policy overrides it.
type AuthorizationDefaultsSpec struct {
	// defaultPolicy for workloads that no AuthorizationPolicy selects.
	// +optional
	// +kubebuilder:default=Allow
	DefaultPolicy DefaultPolicy `json:"defaultPolicy,omitempty"`
}

// UpgradeStrategy is how workloads move to a new control-plane revision.
// +kubebuilder:validation:Enum=RollingBatches;Manual
type UpgradeStrategy string

const (
	// UpgradeRollingBatches restarts meshed workloads in health-gated batches.
	UpgradeRollingBatches UpgradeStrategy = "RollingBatches"
	// UpgradeManual starts the new revision and points injection at it, then
	// leaves restarting workloads to the user; status shows who is stale.
	UpgradeManual UpgradeStrategy = "Manual"
)

// UpgradeSpec controls the rollout of a new version to meshed workloads.
type UpgradeSpec struct {
	// strategy is RollingBatches (the operator restarts workloads) or Manual.
	// +optional
	// +kubebuilder:default=RollingBatches
	Strategy UpgradeStrategy `json:"strategy,omitempty"`

	// batchSize is how many workloads (Deployments, StatefulSets, DaemonSets)
	// are restarted together.
	// +optional
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	BatchSize int32 `json:"batchSize,omitempty"`

	// maxUnavailable is the most workloads that may be not fully available at
	// once during the rollout: a count (≥ 1) or a percentage of the meshed
	// workloads ("25%").
	// +optional
	// +kubebuilder:default="25%"
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 1 : self.matches('^([1-9][0-9]?|100)%$')",message="upgrade.maxUnavailable must be a count of at least 1 or a percentage from 1% to 100%"
	MaxUnavailable intstr.IntOrString `json:"maxUnavailable,omitempty,omitzero"`

	// batchTimeout is how long a batch may take to become ready before the
	// rollout pauses and reports the workload that failed.
	// +optional
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('30s') && duration(self) <= duration('24h')",message="upgrade.batchTimeout must be between 30s and 24h"
	BatchTimeout metav1.Duration `json:"batchTimeout,omitempty,omitzero"`

	// paused stops the rollout after the current batch; unpausing resumes it.
	// +optional
	Paused bool `json:"paused,omitempty"`
}

// AccessLogFormat of the proxies' access log.
// +kubebuilder:validation:Enum=Off;Text;JSON
type AccessLogFormat string

// ObservabilitySpec configures metrics and logs.
type ObservabilitySpec struct {
	// accessLog format of every proxy, Off by default.
	// +optional
	// +kubebuilder:default=Off
	AccessLog AccessLogFormat `json:"accessLog,omitempty"`

	// scrapeAnnotations adds prometheus.io/scrape, port and path annotations
	// to injected pods so a stock Prometheus finds the proxies' metrics.
	// +optional
	// +kubebuilder:default=Enabled
	// +kubebuilder:validation:Enum=Enabled;Disabled
	ScrapeAnnotations string `json:"scrapeAnnotations,omitempty"`
}

// MeshControlPlaneStatus is what the operator observed.
type MeshControlPlaneStatus struct {
	// observedGeneration is the generation last fully reconciled.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, Progressing, Degraded, UpgradeInProgress.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// version shows the desired version and the one all of the mesh runs.
	// +optional
	Version VersionStatus `json:"version,omitempty,omitzero"`

	// revisions are the control-plane revisions that exist.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=8
	Revisions []RevisionStatus `json:"revisions,omitempty"`

	// proxies counts the meshed proxies.
	// +optional
	Proxies ProxiesStatus `json:"proxies,omitempty,omitzero"`

	// certificates shows when the mesh's certificates expire.
	// +optional
	Certificates CertificatesStatus `json:"certificates,omitempty,omitzero"`

	// upgrade shows the progress of a rollout to a new version.
	// +optional
	Upgrade *UpgradeStatus `json:"upgrade,omitempty"`
}

// VersionStatus compares the desired version with the running one.
type VersionStatus struct {
	// desired is spec.version as last observed.
	// +optional
	Desired string `json:"desired,omitempty"`
	// current is the version that the whole mesh runs; empty while proxies of
	// several versions run (see proxies.byVersion).
	// +optional
	Current string `json:"current,omitempty"`
}

// RevisionStatus describes one control-plane revision.
type RevisionStatus struct {
	// name of the revision, e.g. v1-4-2.
	// +required
	Name string `json:"name"`
	// version it runs.
	// +required
	Version string `json:"version"`
	// ready is true when its Deployment is available.
	// +optional
	Ready bool `json:"ready,omitempty"`
	// proxies connected to, or injected by, this revision.
	// +optional
	Proxies int32 `json:"proxies,omitempty"`
}

// ProxiesStatus counts proxies.
type ProxiesStatus struct {
	// total number of meshed pods.
	// +optional
	Total int32 `json:"total,omitempty"`
	// stale is the number of proxies that have not acknowledged the current
	// configuration.
	// +optional
	Stale int32 `json:"stale,omitempty"`
	// uninjected is the number of running pods in selected namespaces without
	// a proxy (created while the injector was unavailable).
	// +optional
	Uninjected int32 `json:"uninjected,omitempty"`
	// byVersion counts proxies per version (version skew).
	// +optional
	// +listType=map
	// +listMapKey=version
	// +kubebuilder:validation:MaxItems=16
	ByVersion []VersionCount `json:"byVersion,omitempty"`
}

// VersionCount is a number of proxies running one version.
type VersionCount struct {
	// version of the proxies.
	// +required
	Version string `json:"version"`
	// count of proxies.
	// +required
	Count int32 `json:"count"`
}

// CertificatesStatus shows the expiry of the mesh's certificates.
type CertificatesStatus struct {
	// trustAnchorExpiry is when the (newest) trust anchor expires.
	// +optional
	TrustAnchorExpiry *metav1.Time `json:"trustAnchorExpiry,omitempty"`
	// issuerExpiry is when the issuer certificate expires.
	// +optional
	IssuerExpiry *metav1.Time `json:"issuerExpiry,omitempty"`
	// webhookExpiry is when the injector's serving certificate expires.
	// +optional
	WebhookExpiry *metav1.Time `json:"webhookExpiry,omitempty"`
	// trustAnchors is the number of roots in the trust bundle (2 during a
	// rotation overlap).
	// +optional
	TrustAnchors int32 `json:"trustAnchors,omitempty"`
}

// UpgradePhase is a step of a rollout.
// +kubebuilder:validation:Enum=StartingRevision;RestartingWorkloads;Paused;RemovingOldRevision;Complete
type UpgradePhase string

// UpgradeStatus shows the progress of a rollout.
type UpgradeStatus struct {
	// from is the version being left.
	// +optional
	From string `json:"from,omitempty"`
	// to is the version being rolled out.
	// +optional
	To string `json:"to,omitempty"`
	// phase is the current step.
	// +optional
	Phase UpgradePhase `json:"phase,omitempty"`
	// batch is the number of the batch in progress, from 1.
	// +optional
	Batch int32 `json:"batch,omitempty"`
	// workloadsTotal is the number of workloads to restart.
	// +optional
	WorkloadsTotal int32 `json:"workloadsTotal,omitempty"`
	// workloadsUpdated is the number restarted and ready on the new version.
	// +optional
	WorkloadsUpdated int32 `json:"workloadsUpdated,omitempty"`
	// failedWorkload is kind/namespace/name of the workload that stopped the
	// rollout, if any.
	// +optional
	FailedWorkload string `json:"failedWorkload,omitempty"`
	// startTime of the rollout.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
}

// MeshControlPlane installs, configures and upgrades the Weft mesh. One per
// cluster is supported; others report Ready=False with reason Conflict.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=wmcp,categories=weft
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.spec.version`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Proxies",type=integer,JSONPath=`.status.proxies.total`
// +kubebuilder:printcolumn:name="Stale",type=integer,JSONPath=`.status.proxies.stale`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshControlPlane struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired mesh.
	// +required
	Spec MeshControlPlaneSpec `json:"spec"`

	// status is what the operator observed.
	// +optional
	Status MeshControlPlaneStatus `json:"status,omitempty,omitzero"`
}

// MeshControlPlaneList is a list of MeshControlPlane.
//
// +kubebuilder:object:root=true
type MeshControlPlaneList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshControlPlane `json:"items"`
}

func init() {
	SchemeBuilder.Register(&MeshControlPlane{}, &MeshControlPlaneList{})
}
