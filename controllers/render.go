package controllers

import (
	"fmt"
	"time"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/images"
)

// Names of the objects the operator owns. Other components (the control
// plane, weftctl) rely on them: they are a contract, not a detail.
const (
	ControlPlaneName       = "weft-controlplane"
	TrustAnchorSecretName  = "weft-trust-anchor"
	IssuerSecretName       = "weft-issuer"
	IssuerCertificateName  = "weft-issuer"
	TrustBundleConfigMap   = "weft-trust-bundle"
	WebhookSecretName      = "weft-webhook-serving"
	WebhookConfigName      = "weft-proxy-injector"
	WebhookName            = "sidecar.mesh.weft.dev"
	WebhookPodOptInName    = "pod-opt-in.sidecar.mesh.weft.dev"
	WebhookPath            = "/inject"
	WebhookCertDir         = "/var/run/weft/webhook"
	ProxyStatusPrefix      = "weft-proxy-status-"
	DefaultNamespace       = "weft-system"
	DefaultTrustDomain     = "cluster.local"
	AnnotationRestartedAt  = "mesh.weft.dev/restartedAt"
	AnnotationRestartedFor = "mesh.weft.dev/restartedFor"
	LabelVersion           = "mesh.weft.dev/version"
	LabelMesh              = "mesh.weft.dev/mesh"
	LabelPartOf            = "app.kubernetes.io/part-of"
	LabelManagedBy         = "app.kubernetes.io/managed-by"
	LabelComponent         = "app.kubernetes.io/component"
	LabelName              = "app.kubernetes.io/name"
	ManagedBy              = "weft-operator"
	PartOf                 = "weft"
	ComponentControlPlane  = "controlplane"
	ComponentIdentity      = "identity"
	ComponentInjector      = "injector"
	caCertKey              = "ca.crt"
	controlPlaneReplicas   = 2
	grpcPort               = 8090
	webhookPort            = 9443
	metricsPort            = 9090
	healthPort             = 9091
	webhookServicePort     = 443
	webhookTimeoutSeconds  = 10
	controlPlaneContainer  = "controlplane"
	webhookVolumeName      = "webhook-cert"
	injectEnabled          = "enabled"
)

// meshNamespace is the control-plane namespace, defaulted as the schema does
// so that a spec read without defaults (unit tests) renders the same objects.
func meshNamespace(m *meshv1alpha1.MeshControlPlane) string {
	if m.Spec.Namespace == "" {
		return DefaultNamespace
	}
	return m.Spec.Namespace
}

func trustDomain(m *meshv1alpha1.MeshControlPlane) string {
	if m.Spec.TrustDomain == "" {
		return DefaultTrustDomain
	}
	return m.Spec.TrustDomain
}

func durationOr(d metav1.Duration, def time.Duration) time.Duration {
	if d.Duration <= 0 {
		return def
	}
	return d.Duration
}

func issuerLifetime(m *meshv1alpha1.MeshControlPlane) time.Duration {
	return durationOr(m.Spec.Identity.IssuerLifetime, 8760*time.Hour)
}

func trustAnchorLifetime(m *meshv1alpha1.MeshControlPlane) time.Duration {
	if m.Spec.Identity.BuiltInCA == nil {
		return 87600 * time.Hour
	}
	return durationOr(m.Spec.Identity.BuiltInCA.TrustAnchorLifetime, 87600*time.Hour)
}

func leafLifetime(m *meshv1alpha1.MeshControlPlane) time.Duration {
	return durationOr(m.Spec.Identity.LeafLifetime, 24*time.Hour)
}

// RevisionObjectName names a revision's Deployment, Service and PDB.
func RevisionObjectName(rev string) string { return ControlPlaneName + "-" + rev }

// ownerRef makes the MeshControlPlane the controller of an object, so the
// garbage collector deletes namespaced children with it.
func ownerRef(m *meshv1alpha1.MeshControlPlane) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion:         meshv1alpha1.GroupVersion.String(),
		Kind:               "MeshControlPlane",
		Name:               m.Name,
		UID:                m.UID,
		Controller:         ptr.To(true),
		BlockOwnerDeletion: ptr.To(true),
	}
}

func commonLabels(m *meshv1alpha1.MeshControlPlane, component string) map[string]string {
	return map[string]string{
		LabelPartOf:    PartOf,
		LabelManagedBy: ManagedBy,
		LabelComponent: component,
		LabelMesh:      m.Name,
	}
}

func objectMeta(m *meshv1alpha1.MeshControlPlane, name, namespace, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:            name,
		Namespace:       namespace,
		Labels:          commonLabels(m, component),
		OwnerReferences: []metav1.OwnerReference{ownerRef(m)},
	}
}

func revisionLabels(m *meshv1alpha1.MeshControlPlane, img images.Set) map[string]string {
	l := commonLabels(m, ComponentControlPlane)
	l[LabelName] = ControlPlaneName
	l[meshv1alpha1.LabelRevision] = img.Revision
	l[LabelVersion] = img.Version
	return l
}

func selectorLabels(rev string) map[string]string {
	return map[string]string{LabelName: ControlPlaneName, meshv1alpha1.LabelRevision: rev}
}

// RenderServiceAccount is the identity every control-plane revision runs as.
func RenderServiceAccount(m *meshv1alpha1.MeshControlPlane) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: objectMeta(m, ControlPlaneName, meshNamespace(m), ComponentControlPlane),
	}
}

// RenderClusterRole grants the control plane what it reads cluster-wide and
// the status it writes; nothing else, and no wildcards.
func RenderClusterRole(m *meshv1alpha1.MeshControlPlane) *rbacv1.ClusterRole {
	read := []string{"get", "list", "watch"}
	status := []string{"get", "update", "patch"}
	meta := objectMeta(m, ControlPlaneName, "", ComponentControlPlane)
	return &rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
		ObjectMeta: meta,
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"services", "pods", "namespaces"}, Verbs: read},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: read},
			{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"httproutes"}, Verbs: read},
			{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"httproutes/status"}, Verbs: status},
			{APIGroups: []string{meshv1alpha1.GroupVersion.Group}, Resources: []string{"trafficsplits", "authorizationpolicies", "meshcontrolplanes"}, Verbs: read},
			{APIGroups: []string{meshv1alpha1.GroupVersion.Group}, Resources: []string{"trafficsplits/status", "authorizationpolicies/status"}, Verbs: status},
			{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
			{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		},
	}
}

// RenderClusterRoleBinding binds RenderClusterRole to the control plane.
func RenderClusterRoleBinding(m *meshv1alpha1.MeshControlPlane) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
		ObjectMeta: objectMeta(m, ControlPlaneName, "", ComponentControlPlane),
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: ControlPlaneName},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: ControlPlaneName, Namespace: meshNamespace(m)}},
	}
}

// RenderRole grants what the control plane needs in its own namespace: the
// issuer Secret (by name only), its proxy-status ConfigMaps and its leader
// Lease. ConfigMaps and Leases cannot be limited by name for create.
func RenderRole(m *meshv1alpha1.MeshControlPlane) *rbacv1.Role {
	return &rbacv1.Role{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
		ObjectMeta: objectMeta(m, ControlPlaneName, meshNamespace(m), ComponentControlPlane),
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{IssuerSecretName}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch"}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch"}},
		},
	}
}

// RenderRoleBinding binds RenderRole to the control plane.
func RenderRoleBinding(m *meshv1alpha1.MeshControlPlane) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
		ObjectMeta: objectMeta(m, ControlPlaneName, meshNamespace(m), ComponentControlPlane),
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: ControlPlaneName},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: ControlPlaneName, Namespace: meshNamespace(m)}},
	}
}

// ControlPlaneArgs are the flags of one revision's control plane.
func ControlPlaneArgs(m *meshv1alpha1.MeshControlPlane, img images.Set) []string {
	return []string{
		"--mesh-name=" + m.Name,
		"--namespace=" + meshNamespace(m),
		"--revision=" + img.Revision,
		"--version=" + img.Version,
		"--trust-domain=" + trustDomain(m),
		"--issuer-secret=" + IssuerSecretName,
		"--webhook-cert-dir=" + WebhookCertDir,
		"--proxy-image=" + img.Proxy,
		fmt.Sprintf("--grpc-addr=:%d", grpcPort),
		fmt.Sprintf("--webhook-addr=:%d", webhookPort),
		fmt.Sprintf("--health-addr=:%d", healthPort),
		fmt.Sprintf("--metrics-addr=:%d", metricsPort),
		"--leader-elect",
	}
}

// RenderDeployment is one control-plane revision.
func RenderDeployment(m *meshv1alpha1.MeshControlPlane, img images.Set) *appsv1.Deployment {
	labels := revisionLabels(m, img)
	podLabels := map[string]string{}
	for k, v := range labels {
		podLabels[k] = v
	}
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("health")}},
			PeriodSeconds: 10,
		}
	}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: withLabels(objectMeta(m, RevisionObjectName(img.Revision), meshNamespace(m), ComponentControlPlane), labels),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](controlPlaneReplicas),
			Selector: &metav1.LabelSelector{MatchLabels: selectorLabels(img.Revision)},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)),
					MaxSurge:       ptr.To(intstr.FromInt32(1)),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels: podLabels,
					// The control plane's own pods never get a proxy.
					Annotations: map[string]string{meshv1alpha1.LabelInject: "disabled"},
				},
				Spec: corev1.PodSpec{
					ServiceAccountName: ControlPlaneName,
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:    controlPlaneContainer,
						Image:   img.ControlPlane,
						Command: []string{"/weft-controlplane"},
						Args:    ControlPlaneArgs(m, img),
						Env: []corev1.EnvVar{
							{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
							{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
						},
						Ports: []corev1.ContainerPort{
							{Name: "grpc", ContainerPort: grpcPort, Protocol: corev1.ProtocolTCP},
							{Name: "webhook", ContainerPort: webhookPort, Protocol: corev1.ProtocolTCP},
							{Name: "metrics", ContainerPort: metricsPort, Protocol: corev1.ProtocolTCP},
							{Name: "health", ContainerPort: healthPort, Protocol: corev1.ProtocolTCP},
						},
						LivenessProbe:  probe("/healthz"),
						ReadinessProbe: probe("/readyz"),
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{
								corev1.ResourceCPU:    resource.MustParse("100m"),
								corev1.ResourceMemory: resource.MustParse("128Mi"),
							},
							Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
						},
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
						VolumeMounts: []corev1.VolumeMount{{Name: webhookVolumeName, MountPath: WebhookCertDir, ReadOnly: true}},
					}},
					Volumes: []corev1.Volume{{
						Name:         webhookVolumeName,
						VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: WebhookSecretName}},
					}},
				},
			},
		},
	}
}

func withLabels(meta metav1.ObjectMeta, labels map[string]string) metav1.ObjectMeta {
	meta.Labels = labels
	return meta
}

// RenderService exposes one revision: proxies' gRPC, the injector on 443 and
// metrics.
func RenderService(m *meshv1alpha1.MeshControlPlane, img images.Set) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: withLabels(objectMeta(m, RevisionObjectName(img.Revision), meshNamespace(m), ComponentControlPlane), revisionLabels(m, img)),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: selectorLabels(img.Revision),
			Ports: []corev1.ServicePort{
				{Name: "grpc", Port: grpcPort, TargetPort: intstr.FromString("grpc"), Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("kubernetes.io/h2c")},
				{Name: "https-webhook", Port: webhookServicePort, TargetPort: intstr.FromString("webhook"), Protocol: corev1.ProtocolTCP},
				{Name: "http-metrics", Port: metricsPort, TargetPort: intstr.FromString("metrics"), Protocol: corev1.ProtocolTCP},
			},
		},
	}
}

// RenderPDB keeps one replica of a revision through voluntary disruptions
// (node drains), so the injector and identity service stay reachable.
func RenderPDB(m *meshv1alpha1.MeshControlPlane, img images.Set) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: withLabels(objectMeta(m, RevisionObjectName(img.Revision), meshNamespace(m), ComponentControlPlane), revisionLabels(m, img)),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector:       &metav1.LabelSelector{MatchLabels: selectorLabels(img.Revision)},
		},
	}
}

// injectionSelector is spec.injection.namespaceSelector with the schema's
// default.
func injectionSelector(m *meshv1alpha1.MeshControlPlane) *metav1.LabelSelector {
	if m.Spec.Injection.NamespaceSelector != nil {
		return m.Spec.Injection.NamespaceSelector
	}
	return &metav1.LabelSelector{MatchLabels: map[string]string{meshv1alpha1.LabelInject: injectEnabled}}
}

// excludedNamespaces are the requirements every injection webhook adds:
// never the system namespaces or the mesh's own, never a namespace labelled
// mesh.weft.dev/inject=disabled.
func excludedNamespaces(m *meshv1alpha1.MeshControlPlane) []metav1.LabelSelectorRequirement {
	return []metav1.LabelSelectorRequirement{{
		Key:      corev1.LabelMetadataName,
		Operator: metav1.LabelSelectorOpNotIn,
		Values:   []string{"kube-system", "kube-public", meshNamespace(m)},
	}, {
		Key:      meshv1alpha1.LabelInject,
		Operator: metav1.LabelSelectorOpNotIn,
		Values:   []string{"disabled"},
	}}
}

// notDisabled selects pods not labelled mesh.weft.dev/inject=disabled.
func notDisabled() *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key:      meshv1alpha1.LabelInject,
		Operator: metav1.LabelSelectorOpNotIn,
		Values:   []string{"disabled"},
	}}}
}

// podOptInNamespaceSelector is every namespace but the excluded ones and,
// when the injection selector is a single label (the default), the selected
// ones, whose pods the first webhook takes.
func podOptInNamespaceSelector(m *meshv1alpha1.MeshControlPlane) *metav1.LabelSelector {
	sel := &metav1.LabelSelector{MatchExpressions: excludedNamespaces(m)}
	in := injectionSelector(m)
	if len(in.MatchLabels) == 1 && len(in.MatchExpressions) == 0 {
		for k, v := range in.MatchLabels {
			if k == meshv1alpha1.LabelInject {
				// Merge with the exclusion of "disabled" on the same key.
				sel.MatchExpressions[1].Values = []string{v, "disabled"}
				continue
			}
			sel.MatchExpressions = append(sel.MatchExpressions, metav1.LabelSelectorRequirement{
				Key: k, Operator: metav1.LabelSelectorOpNotIn, Values: []string{v}})
		}
	}
	return sel
}

// webhookNamespaceSelector is the user's selector with the exclusions.
func webhookNamespaceSelector(m *meshv1alpha1.MeshControlPlane) *metav1.LabelSelector {
	sel := injectionSelector(m).DeepCopy()
	sel.MatchExpressions = append(sel.MatchExpressions, excludedNamespaces(m)...)
	return sel
}

// RenderWebhook points pod admission at the active revision's injector.
// caBundle is the mesh's trust bundle, which only changes when the trust
// anchor rotates; the operator owns the whole object (it is not in users'
// Git), so a GitOps tool never sees it drift.
//
// Two webhooks. WebhookName takes every pod of the selected namespaces
// (unless the pod is labelled mesh.weft.dev/inject=disabled), with the
// mesh's failurePolicy. WebhookPodOptInName takes the pods of every other
// namespace (bar the excluded ones), because a single pod may opt in with
// the annotation mesh.weft.dev/inject: enabled, which an object selector
// cannot see; the injector leaves the others alone. Its failurePolicy is
// always Ignore: an injector outage must not stop pod creation in
// namespaces that never asked for the mesh. When the selector is a single
// label, the second webhook leaves out the selected namespaces, so each pod
// is sent once; with another selector a pod of a selected namespace is sent
// twice and the second call finds it injected. The injector applies the
// same rules again (inject.Injectable with this selector).
func RenderWebhook(m *meshv1alpha1.MeshControlPlane, activeRevision string, caBundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	// Ignore unless Fail is asked for: the API's default, also when the
	// field is empty (an object that was never through the API server).
	failure := admissionregistrationv1.Ignore
	if m.Spec.Injection.FailurePolicy == meshv1alpha1.FailurePolicyFail {
		failure = admissionregistrationv1.Fail
	}
	hook := func(name string, namespaces, objects *metav1.LabelSelector, failure admissionregistrationv1.FailurePolicyType) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name: name,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service: &admissionregistrationv1.ServiceReference{
					Namespace: meshNamespace(m),
					Name:      RevisionObjectName(activeRevision),
					Path:      ptr.To(WebhookPath),
					Port:      ptr.To[int32](webhookServicePort),
				},
				CABundle: caBundle,
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{
					APIGroups:   []string{""},
					APIVersions: []string{"v1"},
					Resources:   []string{"pods"},
					Scope:       ptr.To(admissionregistrationv1.NamespacedScope),
				},
			}},
			FailurePolicy:           &failure,
			MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
			NamespaceSelector:       namespaces,
			ObjectSelector:          objects,
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          ptr.To[int32](webhookTimeoutSeconds),
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
		}
	}
	meta := objectMeta(m, WebhookConfigName, "", ComponentInjector)
	meta.Labels[meshv1alpha1.LabelRevision] = activeRevision
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: meta,
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			hook(WebhookName, webhookNamespaceSelector(m), notDisabled(), failure),
			hook(WebhookPodOptInName, podOptInNamespaceSelector(m), notDisabled(), admissionregistrationv1.Ignore),
		},
	}
}

// RenderTrustBundle publishes the roots proxies and the control plane trust.
func RenderTrustBundle(m *meshv1alpha1.MeshControlPlane, bundle []byte) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: objectMeta(m, TrustBundleConfigMap, meshNamespace(m), ComponentIdentity),
		Data:       map[string]string{caCertKey: string(bundle)},
	}
}

// RenderTLSSecret holds a certificate, its key and optionally a CA bundle.
func RenderTLSSecret(m *meshv1alpha1.MeshControlPlane, name, component string, cert, key, ca []byte) *corev1.Secret {
	data := map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key}
	if ca != nil {
		data[caCertKey] = ca
	}
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: objectMeta(m, name, meshNamespace(m), component),
		Type:       corev1.SecretTypeTLS,
		Data:       data,
	}
}

// RenderIssuerCertificate asks cert-manager for the mesh's issuer: an
// intermediate CA signed by the user's issuer, renewed at 2/3 of its life.
func RenderIssuerCertificate(m *meshv1alpha1.MeshControlPlane) *cmv1.Certificate {
	ref := m.Spec.Identity.CertManager.IssuerRef
	kind := string(ref.Kind)
	if kind == "" {
		kind = "Issuer"
	}
	group := ref.Group
	if group == "" {
		group = "cert-manager.io"
	}
	life := issuerLifetime(m)
	return &cmv1.Certificate{
		TypeMeta:   metav1.TypeMeta{APIVersion: cmv1.SchemeGroupVersion.String(), Kind: "Certificate"},
		ObjectMeta: objectMeta(m, IssuerCertificateName, meshNamespace(m), ComponentIdentity),
		Spec: cmv1.CertificateSpec{
			CommonName:  "weft issuer " + trustDomain(m),
			IsCA:        true,
			Duration:    &metav1.Duration{Duration: life},
			RenewBefore: &metav1.Duration{Duration: life / 3},
			SecretName:  IssuerSecretName,
			// The label lets the operator's cache (which only holds Weft's
			// Secrets) see the Secret cert-manager writes.
			SecretTemplate: &cmv1.CertificateSecretTemplate{Labels: map[string]string{LabelPartOf: PartOf}},
			PrivateKey: &cmv1.CertificatePrivateKey{
				Algorithm:      cmv1.ECDSAKeyAlgorithm,
				Size:           256,
				RotationPolicy: cmv1.RotationPolicyAlways,
			},
			Usages:    []cmv1.KeyUsage{cmv1.UsageCertSign, cmv1.UsageCRLSign, cmv1.UsageDigitalSignature},
			IssuerRef: cmmeta.IssuerReference{Name: ref.Name, Kind: kind, Group: group},
		},
	}
}
