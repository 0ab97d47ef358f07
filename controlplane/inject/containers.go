package inject

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// initContainer is proxy-init: `weft-proxy init` programs the pod's iptables
// rules and exits. It runs as root with NET_ADMIN and NET_RAW because
// changing the pod network namespace's nat table requires them; everything
// else is dropped, and it is finished before any application code runs.
func initContainer(cfg Config, skipIn, skipOut []string) corev1.Container {
	args := []string{
		"init",
		"--inbound-port=" + strconv.Itoa(int(cfg.InboundPort)),
		"--outbound-port=" + strconv.Itoa(int(cfg.OutboundPort)),
		"--admin-port=" + strconv.Itoa(int(cfg.AdminPort)),
		"--proxy-uid=" + strconv.FormatInt(cfg.ProxyUID, 10),
	}
	for _, f := range []struct {
		flag   string
		values []string
	}{
		{"--skip-inbound-ports", skipIn},
		{"--skip-outbound-ports", skipOut},
		{"--skip-outbound-cidrs", cfg.SkipOutboundCIDRs},
	} {
		if len(f.values) > 0 {
			args = append(args, f.flag+"="+strings.Join(f.values, ","))
		}
	}
	return corev1.Container{
		Name:            InitContainerName,
		Image:           cfg.ProxyImage,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Args:            args,
		Resources:       *cfg.InitResources.DeepCopy(),
		SecurityContext: &corev1.SecurityContext{
			// Set explicitly: a pod-level runAsNonRoot or runAsUser would
			// otherwise apply and make iptables fail.
			RunAsUser:                ptr.To[int64](0),
			RunAsNonRoot:             ptr.To(false),
			Privileged:               ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			// Writable: iptables-legacy takes its lock in /run/xtables.lock.
			ReadOnlyRootFilesystem: ptr.To(false),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// proxyContainer is the weft-proxy native sidecar: an init container with
// restartPolicy Always, which the kubelet starts before the application's
// containers and stops after them.
func proxyContainer(cfg Config, resources corev1.ResourceRequirements, extraEnv []corev1.EnvVar) corev1.Container {
	fieldEnv := func(name, fieldPath string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: fieldPath},
		}}
	}
	port := func(p int32) string { return strconv.Itoa(int(p)) }
	admin := intstr.FromInt32(cfg.AdminPort)
	env := []corev1.EnvVar{
		// The downward API, because the name is not known at admission
		// for pods created from a generateName.
		fieldEnv(EnvPodName, "metadata.name"),
		fieldEnv(EnvPodNamespace, "metadata.namespace"),
		fieldEnv(EnvPodIP, "status.podIP"),
		fieldEnv(EnvServiceAccount, "spec.serviceAccountName"),
		fieldEnv(EnvRevision, fmt.Sprintf("metadata.labels['%s']", LabelRevision)),
		{Name: EnvControlPlaneAddr, Value: cfg.ControlPlaneAddress},
		{Name: EnvTrustDomain, Value: cfg.TrustDomain},
		{Name: EnvLogLevel, Value: cfg.LogLevel},
		{Name: EnvInboundPort, Value: port(cfg.InboundPort)},
		{Name: EnvOutboundPort, Value: port(cfg.OutboundPort)},
		{Name: EnvAdminPort, Value: port(cfg.AdminPort)},
		{Name: EnvTokenPath, Value: path.Join(TokenMountPath, "token")},
	}
	if cfg.AccessLog != "" && cfg.AccessLog != "off" {
		env = append(env, corev1.EnvVar{Name: EnvAccessLog, Value: cfg.AccessLog})
	}
	if cfg.TrustAnchorsPEM != "" {
		// The roots the proxy verifies the control plane's identity service
		// with before it has a certificate of its own (it must not trust
		// whoever answers at the control plane's address).
		env = append(env, corev1.EnvVar{Name: EnvTrustAnchors, Value: cfg.TrustAnchorsPEM})
	}
	env = append(env, extraEnv...)
	return corev1.Container{
		Name:            ProxyContainerName,
		Image:           cfg.ProxyImage,
		ImagePullPolicy: cfg.ImagePullPolicy,
		RestartPolicy:   ptr.To(corev1.ContainerRestartPolicyAlways),
		// The flags of `weft-proxy run`; the environment below carries what
		// the proxy learns about its pod.
		Args: []string{
			"run",
			"--inbound=:" + port(cfg.InboundPort),
			"--outbound=:" + port(cfg.OutboundPort),
			"--admin=:" + port(cfg.AdminPort),
			"--log-level=" + cfg.LogLevel,
		},
		Env: env,
		Ports: []corev1.ContainerPort{
			{Name: "weft-inbound", ContainerPort: cfg.InboundPort, Protocol: corev1.ProtocolTCP},
			{Name: "weft-admin", ContainerPort: cfg.AdminPort, Protocol: corev1.ProtocolTCP},
		},
		Resources: resources,
		VolumeMounts: []corev1.VolumeMount{
			{Name: TokenVolumeName, MountPath: TokenMountPath, ReadOnly: true},
		},
		// A startup probe holds back the application containers until the
		// proxy can carry their traffic.
		StartupProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: ProxyReadyPath, Port: admin}},
			PeriodSeconds:    1,
			FailureThreshold: 120,
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: ProxyReadyPath, Port: admin}},
			PeriodSeconds: 10,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: ProxyLivePath, Port: admin}},
			PeriodSeconds:    10,
			FailureThreshold: 3,
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr.To(cfg.ProxyUID),
			RunAsGroup:               ptr.To(cfg.ProxyUID),
			RunAsNonRoot:             ptr.To(true),
			Privileged:               ptr.To(false),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// tokenVolume projects a ServiceAccount token for the mesh's audience only,
// so that the token the proxy sends to the identity service is useless
// against the API server, and the kubelet rotates it.
func tokenVolume(cfg Config) corev1.Volume {
	return corev1.Volume{
		Name: TokenVolumeName,
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience:          cfg.TokenAudience,
				ExpirationSeconds: ptr.To(cfg.TokenExpirationSeconds),
				Path:              "token",
			}}},
		}},
	}
}
