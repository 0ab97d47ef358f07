package configserver

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
)

// lastApplied is kubectl's copy of the whole object in an annotation.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// TransformPod is the informer cache transform for Pods in the control
// plane: of a Pod it keeps what the config server reads (metadata, the
// ServiceAccount, the containers' names and ports, the phase) and drops
// the rest (managed fields, kubectl's last-applied copy, volumes, env,
// status), usually most of a Pod's size. Nothing in the control plane
// writes Pods back, which is what makes stripping them safe. Other objects
// only lose their managed fields.
func TransformPod(obj any) (any, error) {
	if o, ok := obj.(metav1.Object); ok {
		o.SetManagedFields(nil)
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	if _, ok := pod.Annotations[lastApplied]; ok {
		a := make(map[string]string, len(pod.Annotations)-1)
		for k, v := range pod.Annotations {
			if k != lastApplied {
				a[k] = v
			}
		}
		pod.Annotations = a
	}
	containers := make([]corev1.Container, len(pod.Spec.Containers))
	for i, c := range pod.Spec.Containers {
		containers[i] = corev1.Container{Name: c.Name, Ports: c.Ports}
	}
	pod.Spec = corev1.PodSpec{ServiceAccountName: pod.Spec.ServiceAccountName, Containers: containers}
	pod.Status = corev1.PodStatus{Phase: pod.Status.Phase}
	return pod, nil
}

var _ toolscache.TransformFunc = TransformPod

// TransformEndpointSlice is the informer cache transform for EndpointSlices
// in the control plane: of an endpoint the compiler reads its addresses,
// readiness and target Pod, so its node, zone, hostname and topology hints
// are dropped, with the slice's annotations (the endpoints controller's
// last-change time) and managed fields. Nothing in the control plane
// writes EndpointSlices back.
func TransformEndpointSlice(obj any) (any, error) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return TransformPod(obj)
	}
	es.ManagedFields = nil
	es.Annotations = nil
	for i := range es.Endpoints {
		e := &es.Endpoints[i]
		e.Hostname, e.NodeName, e.Zone, e.Hints, e.DeprecatedTopology = nil, nil, nil, nil, nil
		if e.TargetRef != nil {
			e.TargetRef = &corev1.ObjectReference{Kind: e.TargetRef.Kind, Namespace: e.TargetRef.Namespace, Name: e.TargetRef.Name}
		}
	}
	return es, nil
}

var _ toolscache.TransformFunc = TransformEndpointSlice
