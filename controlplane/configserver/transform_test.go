package configserver

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestTransformPodKeepsWhatTheCompilerReads(t *testing.T) {
	ports := []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	in := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", Labels: map[string]string{"app": "web"},
			Annotations:   map[string]string{"mesh.weft.dev/opaque-ports": "3306", lastApplied: `{"huge":true}`},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: corev1.PodSpec{ServiceAccountName: "web", NodeName: "n1",
			Volumes:    []corev1.Volume{{Name: "data"}},
			Containers: []corev1.Container{{Name: "app", Image: "app:1", Ports: ports, Env: []corev1.EnvVar{{Name: "A", Value: "b"}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.1", Conditions: []corev1.PodCondition{{Type: corev1.PodReady}}},
	}
	out, err := TransformPod(in)
	if err != nil {
		t.Fatal(err)
	}
	want := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", Labels: map[string]string{"app": "web"},
			Annotations: map[string]string{"mesh.weft.dev/opaque-ports": "3306"}},
		Spec:   corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Ports: ports}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("TransformPod gave\n%+v\nwant\n%+v", out, want)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "x"}}}}
	if o, _ := TransformPod(svc); o.(*corev1.Service).ManagedFields != nil {
		t.Errorf("managed fields of other objects are kept")
	}
}

func TestTransformEndpointSliceKeepsWhatTheCompilerReads(t *testing.T) {
	ready, port, name := true, int32(8080), "http"
	in := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "web"},
			Annotations:   map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": "2026-12-02T00:00:00Z"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "endpointslice-controller"}}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.244.0.1"},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			Hostname:   &name, NodeName: &name, Zone: &name,
			Hints:     &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "a"}}},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "web-1", UID: "u", ResourceVersion: "7"},
		}},
	}
	out, err := TransformEndpointSlice(in)
	if err != nil {
		t.Fatal(err)
	}
	want := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: "web-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.244.0.1"},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "web-1"},
		}},
	}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("TransformEndpointSlice gave\n%+v\nwant\n%+v", out, want)
	}
	// Other objects are handled as by TransformPod.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "x"}}}}
	if o, _ := TransformEndpointSlice(pod); o.(*corev1.Pod).ManagedFields != nil {
		t.Errorf("managed fields of other objects are kept")
	}
}
