package inject

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Operation is one RFC 6902 operation. Inject adds, and replaces only the
// application's probes.
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
// Kubelet probes: the application containers' liveness, readiness and
// startup probes are rewritten to the proxy's admin port, which performs the
// original probe locally (see rewriteProbes), so no probed port has to
// bypass the proxy. The annotation mesh.weft.dev/rewrite-probes=disabled
// keeps the probes as written and excludes their ports from inbound
// redirection instead.
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
	rewrite, err := probeRewriteEnabled(pod)
	if err != nil {
		return nil, err
	}
	probes := rewriteProbes(pod, cfg, rewrite)
	skipIn = mergePorts(skipIn, probes.skipPorts)
	skipOut, err := portList(cfg.SkipOutboundPorts, pod.Annotations[AnnotationSkipOutboundPorts], AnnotationSkipOutboundPorts)
	if err != nil {
		return nil, err
	}

	concurrency, err := proxyConcurrency(pod, cfg)
	if err != nil {
		return nil, err
	}

	var extraEnv []corev1.EnvVar
	if concurrency > 0 {
		// Read by Go's runtime itself; the proxy leaves it alone.
		extraEnv = append(extraEnv, corev1.EnvVar{Name: "GOMAXPROCS", Value: strconv.Itoa(int(concurrency))})
	}
	if len(probes.probes) > 0 {
		v, err := appProbesEnv(probes.probes)
		if err != nil {
			return nil, err
		}
		extraEnv = append(extraEnv, corev1.EnvVar{Name: EnvAppProbes, Value: v})
	}

	// The probe replacements come first: they address the pod's own init
	// containers by index, before the mesh's are inserted in front of them.
	p := slices.Clone(probes.ops)
	add := func(path string, v any) { p = append(p, Operation{Op: "add", Path: path, Value: v}) }

	// proxy-init must run first and the sidecar right after it, before the
	// application's own init containers, so that those are meshed as well.
	initC := initContainer(cfg, skipIn, skipOut)
	proxyC := proxyContainer(cfg, resources, extraEnv)
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

	addToMap := func(base string, m map[string]string, kv ...string) {
		// Empty counts as missing: an empty map is omitted from the JSON
		// the patch applies to, and a missing map must be added whole
		// (adding a key under a path that does not exist fails the patch).
		if len(m) == 0 {
			whole := map[string]string{}
			for i := 0; i+1 < len(kv); i += 2 {
				whole[kv[i]] = kv[i+1]
			}
			add(base, whole)
			return
		}
		for i := 0; i+1 < len(kv); i += 2 {
			add(base+"/"+escape(kv[i]), kv[i+1])
		}
	}
	annotations := []string{AnnotationInjected, cfg.Revision}
	if cfg.ScrapeAnnotations && !hasScrapeAnnotations(pod) {
		annotations = append(annotations,
			AnnotationPrometheusScrape, "true",
			AnnotationPrometheusPort, strconv.Itoa(int(cfg.AdminPort)),
			AnnotationPrometheusPath, "/metrics")
	}
	addToMap("/metadata/annotations", pod.Annotations, annotations...)
	addToMap("/metadata/labels", pod.Labels, LabelRevision, cfg.Revision)
	return p, nil
}

// hasScrapeAnnotations: the application already tells Prometheus where its
// own metrics are. Those win; the proxy's metrics are then not announced
// (a scrape config of its own can still find port 4191).
func hasScrapeAnnotations(pod *corev1.Pod) bool {
	for _, k := range []string{AnnotationPrometheusScrape, AnnotationPrometheusPort, AnnotationPrometheusPath} {
		if _, ok := pod.Annotations[k]; ok {
			return true
		}
	}
	return false
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

// proxyConcurrency is the pod's annotation; else 0 when the pod sets its
// proxy's CPU limit (the proxy then follows the limit: the pod's own
// setting wins over the mesh's); else the mesh's setting. 0 leaves the
// choice to the proxy.
func proxyConcurrency(pod *corev1.Pod, cfg Config) (int32, error) {
	v, ok := pod.Annotations[AnnotationProxyConcurrency]
	if !ok {
		if _, limited := pod.Annotations[AnnotationProxyCPULimit]; limited {
			return 0, nil
		}
		return cfg.ProxyConcurrency, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 1 || n > MaxProxyConcurrency {
		return 0, fmt.Errorf("cannot inject: annotation %s=%q: want a whole number of threads from 1 to %d", AnnotationProxyConcurrency, v, MaxProxyConcurrency)
	}
	return int32(n), nil
}

// probeRewriteEnabled reads the annotation that turns probe rewriting off.
func probeRewriteEnabled(pod *corev1.Pod) (bool, error) {
	switch v, ok := pod.Annotations[AnnotationRewriteProbes]; {
	case !ok || v == ValueEnabled:
		return true, nil
	case v == ValueDisabled:
		return false, nil
	default:
		return false, fmt.Errorf("cannot inject: annotation %s=%q: want %s or %s", AnnotationRewriteProbes, v, ValueEnabled, ValueDisabled)
	}
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

// mergePorts appends extra to ports, skipping duplicates, keeping order.
func mergePorts(ports, extra []string) []string {
	for _, e := range extra {
		if !slices.Contains(ports, e) {
			ports = append(ports, e)
		}
	}
	return ports
}
