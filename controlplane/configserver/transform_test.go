package configserver

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
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
