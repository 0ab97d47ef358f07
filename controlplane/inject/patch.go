package inject

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Operation is one RFC 6902 operation. Inject only ever adds.
type Operation struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// Patch is an RFC 6902 JSON patch, as an admission response carries it.
type Patch []Operation

// Inject returns the patch that adds the mesh to pod. It does not decide
// whether pod should be injected (see Injectable) and does not modify pod.
//
// Kubelet probes: the ports of the application containers' liveness,
// readiness and startup probes (httpGet, tcpSocket and grpc) are excluded
// from inbound redirection, so probes reach the application exactly as
// without the mesh and need nothing from the proxy. The price is that
// inbound traffic on a probed port bypasses the proxy (no mTLS, policy or
// metrics on it); serve probes on a dedicated port to keep the serving port
// meshed.
func Inject(pod *corev1.Pod, cfg Config) (Patch, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkPod(pod, cfg); err != nil {
		return nil, err
	}
	resources, err := proxyResources(pod, cfg)
	if err != nil {
		return nil, err
	}
	skipIn, err := portList(cfg.SkipInboundPorts, pod.Annotations[AnnotationSkipInboundPorts], AnnotationSkipInboundPorts)
	if err != nil {
		return nil, err
	}
	skipIn = mergePorts(skipIn, probePorts(pod))
	skipOut, err := portList(cfg.SkipOutboundPorts, pod.Annotations[AnnotationSkipOutboundPorts], AnnotationSkipOutboundPorts)
	if err != nil {
		return nil, err
	}

	var p Patch
	add := func(path string, v any) { p = append(p, Operation{Op: "add", Path: path, Value: v}) }

	// proxy-init must run first and the sidecar right after it, before the
	// application's own init containers, so that those are meshed as well.
	initC := initContainer(cfg, skipIn, skipOut)
	proxyC := proxyContainer(cfg, resources)
	if len(pod.Spec.InitContainers) == 0 {
		add("/spec/initContainers", []corev1.Container{initC, proxyC})
	} else {
		add("/spec/initContainers/0", proxyC)
		add("/spec/initContainers/0", initC)
	}

	vol := tokenVolume(cfg)
	if len(pod.Spec.Volumes) == 0 {
		add("/spec/volumes", []corev1.Volume{vol})
	} else {
		add("/spec/volumes/-", vol)
	}

	addToMap := func(base string, m map[string]string, key, value string) {
		// Empty counts as missing: an empty map is omitted from the JSON
		// the patch applies to.
		if len(m) == 0 {
			add(base, map[string]string{key: value})
			return
		}
		add(base+"/"+escape(key), value)
	}
	// A missing map must be added whole: adding a key under a path that does
	// not exist fails the patch.
	addToMap("/metadata/annotations", pod.Annotations, AnnotationInjected, cfg.Revision)
	addToMap("/metadata/labels", pod.Labels, LabelRevision, cfg.Revision)
	return p, nil
}

// escape encodes a map key as a JSON pointer token (RFC 6901).
func escape(key string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(key)
}

// appContainers are the containers that Inject does not add.
func appContainers(pod *corev1.Pod) []corev1.Container {
	return append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...)
}

// checkPod refuses pods that the mesh cannot serve correctly.
func checkPod(pod *corev1.Pod, cfg Config) error {
	if reason := injectedReason(pod); reason != "" {
		return fmt.Errorf("cannot inject: %s", reason)
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name == TokenVolumeName {
			return fmt.Errorf("cannot inject: the pod already has a volume named %s", TokenVolumeName)
		}
	}
	for _, c := range appContainers(pod) {
		uid := (*int64)(nil)
		if pod.Spec.SecurityContext != nil {
			uid = pod.Spec.SecurityContext.RunAsUser
		}
		if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
			uid = c.SecurityContext.RunAsUser
		}
		if uid != nil && *uid == cfg.ProxyUID {
			return fmt.Errorf("cannot inject: container %q runs as UID %d, the UID reserved for the weft proxy, "+
				"whose traffic is never redirected, so this container would bypass the mesh; "+
				"run it as another UID or opt the pod out with the annotation %s: %s",
				c.Name, cfg.ProxyUID, AnnotationInject, ValueDisabled)
		}
	}
	return nil
}

// proxyResources applies the pod's resource annotations over the defaults.
func proxyResources(pod *corev1.Pod, cfg Config) (corev1.ResourceRequirements, error) {
	r := *cfg.Resources.DeepCopy()
	for _, o := range []struct {
		annotation string
		list       *corev1.ResourceList
		name       corev1.ResourceName
	}{
		{AnnotationProxyCPURequest, &r.Requests, corev1.ResourceCPU},
		{AnnotationProxyCPULimit, &r.Limits, corev1.ResourceCPU},
		{AnnotationProxyMemoryRequest, &r.Requests, corev1.ResourceMemory},
		{AnnotationProxyMemoryLimit, &r.Limits, corev1.ResourceMemory},
	} {
		v, ok := pod.Annotations[o.annotation]
		if !ok {
			continue
		}
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Sign() < 0 {
			return r, fmt.Errorf("cannot inject: annotation %s=%q is not a valid quantity (for example 100m or 128Mi)", o.annotation, v)
		}
		if *o.list == nil {
			*o.list = corev1.ResourceList{}
		}
		(*o.list)[o.name] = q
	}
	// The API server would reject the pod too, but without naming the
	// annotation that caused it.
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := r.Requests[name]
		lim, hasLim := r.Limits[name]
		if hasReq && hasLim && req.Cmp(lim) > 0 {
			return r, fmt.Errorf("cannot inject: proxy %s request %s is above its limit %s (set by the mesh defaults or the annotations %s-request and %s-limit)",
				name, req.String(), lim.String(), "mesh.weft.dev/proxy-"+string(name), "mesh.weft.dev/proxy-"+string(name))
		}
	}
	return r, nil
}

// portList merges the mesh's port exclusions with a pod annotation's,
// validating the annotation ("25,8000-8100").
func portList(mesh []string, annotation, key string) ([]string, error) {
	out := slices.Clone(mesh)
	for _, f := range strings.Split(annotation, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(f, "-")
		l, err1 := strconv.ParseUint(lo, 10, 16)
		h, err2 := l, error(nil)
		if isRange {
			h, err2 = strconv.ParseUint(hi, 10, 16)
		}
		if err1 != nil || err2 != nil || l == 0 || h < l {
			return nil, fmt.Errorf("cannot inject: annotation %s=%q: %q is not a port or a port range like 8000-8100", key, annotation, f)
		}
		out = append(out, f)
	}
	return out, nil
}

// probePorts returns the ports the application's probes use.
func probePorts(pod *corev1.Pod) []string {
	var ports []string
	for _, c := range appContainers(pod) {
		for _, pr := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			if pr == nil {
				continue
			}
			var port *intstr.IntOrString
			switch {
			case pr.HTTPGet != nil:
				port = &pr.HTTPGet.Port
			case pr.TCPSocket != nil:
				port = &pr.TCPSocket.Port
			case pr.GRPC != nil:
				port = &intstr.IntOrString{IntVal: pr.GRPC.Port}
			}
			if n := resolvePort(c, port); n > 0 {
				ports = append(ports, strconv.Itoa(int(n)))
			}
		}
	}
	return ports
}

// resolvePort turns a probe port (a number or a container port's name) into
// a number; 0 when it names no port, which the kubelet would reject anyway.
func resolvePort(c corev1.Container, p *intstr.IntOrString) int32 {
	if p == nil {
		return 0
	}
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return 0
}

// mergePorts appends extra to ports, skipping duplicates, keeping order.
func mergePorts(ports, extra []string) []string {
	for _, e := range extra {
		if !slices.Contains(ports, e) {
			ports = append(ports, e)
		}
	}
	return ports
}
