package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
)

// uninjectedPod adds to Deployment name a pod that runs without a proxy,
// as one admitted while the injector was down would.
func uninjectedPod(t *testing.T, ns, name string) {
	t.Helper()
	ctx := context.Background()
	d := &appsv1.Deployment{}
	get(t, ns, name, d)
	rs := &appsv1.ReplicaSet{}
	get(t, ns, name+"-v1-0-0", rs)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-missed", Labels: map[string]string{"app": name},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(rs, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))}},
		Spec: d.Spec.Template.Spec,
	}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

func meshEvents(t *testing.T, mesh, reason string) []string {
	t.Helper()
	var list eventsv1.EventList
	if err := env.Client.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == mesh && e.Reason == reason {
			out = append(out, e.Note)
		}
	}
	return out
}

// TestMissedPodsRestart: with spec.injection.missedPods Restart, a pod that
// runs without a proxy is named in an event and its Deployment restarted,
// once per cooldown; a bare pod is only reported; with Report nothing is
// restarted.
func TestMissedPodsRestart(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{}
	startOperator(t, clock)
	const ns, appNS = "weft-missed", "missed-apps"
	installed(t, "missed", ns, appNS, 2, func(m *meshv1alpha1.MeshControlPlane) {
		m.Spec.Injection.MissedPods = meshv1alpha1.MissedPodsRestart
	})
	uninjectedPod(t, appNS, "app-1")
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "bare"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}}}
	skipped := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "host-network",
		Annotations: map[string]string{annotationInjectSkipped: "pod uses the host network"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}}}
	for _, p := range []*corev1.Pod{bare, skipped} {
		if err := env.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	poke(t, "missed")
	waitFor(t, "app-1 restarted for its missed pod", func() error {
		d := deployment(t, appNS, "app-1")
		if d.Spec.Template.Annotations[AnnotationRestartedFor] != restartedForMissedPods {
			return fmt.Errorf("template annotations %v", d.Spec.Template.Annotations)
		}
		return nil
	})
	if a := deployment(t, appNS, "app-0").Spec.Template.Annotations; a[AnnotationRestartedAt] != "" {
		t.Errorf("app-0, all of whose pods have a proxy, was restarted: %v", a)
	}
	waitFor(t, "status and an event name the missed pods (not the skipped one)", func() error {
		if n := getMesh(t, "missed").Status.Proxies.Uninjected; n != 2 {
			return fmt.Errorf("uninjected = %d, want 2 (app-1's pod and the bare pod)", n)
		}
		notes := strings.Join(meshEvents(t, "missed", reasonUninjectedPods), "\n")
		if !strings.Contains(notes, appNS+"/app-1-missed") || !strings.Contains(notes, appNS+"/bare") || strings.Contains(notes, "host-network") {
			return fmt.Errorf("events: %q", notes)
		}
		if len(meshEvents(t, "missed", reasonRestartedToInject)) == 0 {
			return fmt.Errorf("no %s event", reasonRestartedToInject)
		}
		return nil
	})

	// The pod is still there (nothing plays the Deployment controller
	// here): within the cooldown the workload is not restarted again.
	first := deployment(t, appNS, "app-1").Spec.Template.Annotations[AnnotationRestartedAt]
	clock.Advance(time.Minute)
	poke(t, "missed")
	time.Sleep(time.Second) // a reconcile that wrongly restarts would have done so by now
	if again := deployment(t, appNS, "app-1").Spec.Template.Annotations[AnnotationRestartedAt]; again != first {
		t.Errorf("restarted again within the cooldown: %s then %s", first, again)
	}
	clock.Advance(missedPodsCooldown)
	poke(t, "missed")
	waitFor(t, "restarted again after the cooldown", func() error {
		if again := deployment(t, appNS, "app-1").Spec.Template.Annotations[AnnotationRestartedAt]; again == first {
			return fmt.Errorf("restartedAt still %s", first)
		}
		return nil
	})
}
