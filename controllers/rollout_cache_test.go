package controllers

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// TestCacheBehindRestarts: a batch computed from a cached copy that predates
// the operator's own restart patch is recognised from a fresh read, so the
// workload is not restarted twice; a workload that really is pending is
// not held back.
func TestCacheBehindRestarts(t *testing.T) {
	ctx := context.Background()
	const ns = "weft-cache-behind"
	createNamespace(t, ns, nil)
	mk := func(name string) *appsv1.Deployment {
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](1),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
				},
			},
		}
		if err := env.Client.Create(ctx, d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	restarted, pending := mk("restarted"), mk("pending")
	stale := restarted.DeepCopy() // what a lagging cache still shows

	r := &MeshControlPlaneReconciler{Client: env.Client, APIReader: env.Client}
	start := time.Now().UTC().Truncate(time.Second)
	if err := r.restart(ctx, restarted, start.Add(time.Second), "v1-1-0"); err != nil {
		t.Fatal(err)
	}

	behind, err := r.cacheBehindRestarts(ctx, []workload{{obj: stale, key: "Deployment/" + ns + "/restarted"}}, start, "v1-1-0")
	if err != nil || !behind {
		t.Errorf("a stale copy of a restarted workload: behind = %v, %v; want true", behind, err)
	}
	behind, err = r.cacheBehindRestarts(ctx, []workload{{obj: pending, key: "Deployment/" + ns + "/pending"}}, start, "v1-1-0")
	if err != nil || behind {
		t.Errorf("a pending workload: behind = %v, %v; want false", behind, err)
	}
	// A restart for another target (a rollback within the same second) or
	// before this upgrade started does not count.
	for _, tc := range []struct {
		start  time.Time
		target string
	}{{start, "v1-0-0"}, {start.Add(time.Hour), "v1-1-0"}} {
		if behind, err := r.cacheBehindRestarts(ctx, []workload{{obj: stale, key: "restarted"}}, tc.start, tc.target); err != nil || behind {
			t.Errorf("start %s, target %s: behind = %v, %v; want false", tc.start, tc.target, behind, err)
		}
	}
}

func TestRestartedButPending(t *testing.T) {
	clock := &fakeClock{}
	r := &MeshControlPlaneReconciler{Now: clock.Now}
	start := clock.Now().Truncate(time.Second)
	r.restarted = map[string]restartRecord{"Deployment/a/lagging": {target: "v1-1-0", at: clock.Now()}}
	pending := []workload{{key: "Deployment/a/new"}, {key: "Deployment/a/lagging"}}
	if key, behind := r.restartedButPending(pending, start, "v1-1-0"); !behind || key != "Deployment/a/lagging" {
		t.Errorf("restartedButPending = %q, %v; want the lagging workload, even after a workload that sorts first", key, behind)
	}
	if _, behind := r.restartedButPending(pending, start, "v1-0-0"); behind {
		t.Error("a restart for another target counted")
	}
	if _, behind := r.restartedButPending(pending, start.Add(time.Hour), "v1-1-0"); behind {
		t.Error("a restart before this upgrade started counted")
	}
	clock.Advance(cacheLagBound)
	if _, behind := r.restartedButPending(pending, start, "v1-1-0"); behind {
		t.Error("a record older than cacheLagBound still holds the rollout back")
	}
}
