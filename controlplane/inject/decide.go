package inject

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Injectable decides whether pod gets the proxy, and says why in reasons
// (meant for events and logs). ns is the pod's namespace; it may be nil when
// unknown, in which case only the pod's own annotation can opt it in.
//
// Exclusions win over any opt-in: system namespaces, the mesh's own
// namespace, hostNetwork pods (their iptables rules would redirect the node's
// traffic) and pods that are already injected.
func Injectable(pod *corev1.Pod, ns *corev1.Namespace, cfg Config) (bool, []string) {
	nsName := pod.Namespace
	if ns != nil && ns.Name != "" {
		// At admission the pod's own namespace field may still be empty.
		nsName = ns.Name
	}
	var no []string
	switch nsName {
	case "kube-system", "kube-public":
		no = append(no, fmt.Sprintf("namespace %s is a system namespace", nsName))
	case cfg.MeshNamespace:
		no = append(no, fmt.Sprintf("namespace %s runs the mesh control plane", nsName))
	}
	if pod.Spec.HostNetwork {
		no = append(no, "pod uses the host network")
	}
	if reason := injectedReason(pod); reason != "" {
		no = append(no, reason)
	}
	if len(no) > 0 {
		return false, no
	}

	kind, v := "annotation", pod.Annotations[AnnotationInject]
	if v == "" {
		kind, v = "label", pod.Labels[LabelInject]
	}
	switch v {
	case ValueDisabled:
		return false, []string{fmt.Sprintf("pod %s %s=%s", kind, AnnotationInject, v)}
	case ValueEnabled:
		return true, []string{fmt.Sprintf("pod %s %s=%s", kind, AnnotationInject, v)}
	case "":
	default:
		return false, []string{fmt.Sprintf("pod %s %s has unknown value %q (want %s or %s)", kind, AnnotationInject, v, ValueEnabled, ValueDisabled)}
	}
	sel := cfg.namespaceSelector()
	if ns != nil && ns.Labels[LabelInject] != ValueDisabled && sel.Matches(labels.Set(ns.Labels)) {
		return true, []string{fmt.Sprintf("namespace %s matches the injection selector %s", ns.Name, sel)}
	}
	return false, []string{fmt.Sprintf("namespace does not match the injection selector %s and the pod has no %s=%s annotation or label", sel, AnnotationInject, ValueEnabled)}
}

// DefaultNamespaceSelector selects namespaces labelled
// mesh.weft.dev/inject=enabled.
func DefaultNamespaceSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{LabelInject: ValueEnabled})
}

func (c Config) namespaceSelector() labels.Selector {
	if c.NamespaceSelector == nil {
		return DefaultNamespaceSelector()
	}
	return c.NamespaceSelector
}

// injectedReason says why pod counts as injected already, or "".
func injectedReason(pod *corev1.Pod) string {
	if rev, ok := pod.Annotations[AnnotationInjected]; ok {
		return fmt.Sprintf("pod is already injected (annotation %s=%s)", AnnotationInjected, rev)
	}
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if c.Name == ProxyContainerName || c.Name == InitContainerName {
			return fmt.Sprintf("pod already has a container named %s", c.Name)
		}
	}
	return ""
}

// Injected reports whether pod already carries the mesh (the annotation or
// one of the containers Inject adds), so that a second admission of the same
// pod leaves it alone.
func Injected(pod *corev1.Pod) bool {
	return injectedReason(pod) != ""
}
