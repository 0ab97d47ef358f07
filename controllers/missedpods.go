package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
)

const (
	// annotationInjectSkipped is what the injector writes on a pod that
	// asked for the mesh but was left out (controlplane/inject).
	annotationInjectSkipped = "mesh.weft.dev/inject-skipped"
	// maxMissedPods bounds the pods named in an event and followed to
	// their workloads per reconcile.
	maxMissedPods = 50
	// restartedForMissedPods is the AnnotationRestartedFor value of a
	// restart made for missed pods.
	restartedForMissedPods = "missed-pods"
	// missedPodsCooldown: a workload restarted for missed pods is not
	// restarted again for that reason sooner, so that pods the injector
	// keeps missing (it is failing) cause one restart per period, not a
	// loop.
	missedPodsCooldown = 10 * time.Minute

	reasonUninjectedPods    = "UninjectedPods"
	reasonRestartedToInject = "RestartedToInject"
)

// reconcileMissedPods acts on pods in selected namespaces that run without a
// proxy (spec.injection.missedPods). Report names them in a Warning event
// whenever their number changes; Restart also restarts their Deployments,
// StatefulSets and DaemonSets, but only while the active control plane is
// available (its injector would miss them again otherwise) and no upgrade
// is rolling out (the rollout restarts workloads itself).
func (r *MeshControlPlaneReconciler) reconcileMissedPods(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane, obs *observation) error {
	if !obs.missedCounted {
		return nil
	}
	if obs.uninjected > 0 && obs.uninjected != mesh.Status.Proxies.Uninjected {
		names := make([]string, 0, 5)
		for _, p := range obs.missedPods[:min(5, len(obs.missedPods))] {
			names = append(names, p.Namespace+"/"+p.Name)
		}
		more := ""
		if int(obs.uninjected) > len(names) {
			more = fmt.Sprintf(" and %d more", int(obs.uninjected)-len(names))
		}
		hint := "restart their workloads, or set spec.injection.missedPods: Restart"
		if mesh.Spec.Injection.MissedPods == meshv1alpha1.MissedPodsRestart {
			hint = "restarting their workloads once the control plane is available"
		}
		r.event(mesh, true, reasonUninjectedPods, "Observe", "%d pods in injected namespaces run without a proxy: %s%s; %s",
			obs.uninjected, strings.Join(names, ", "), more, hint)
	}
	if mesh.Spec.Injection.MissedPods != meshv1alpha1.MissedPodsRestart || len(obs.missedPods) == 0 {
		return nil
	}
	if active, ok := obs.revision(obs.active); !ok || !active.Available {
		return nil
	}
	if obs.upgrade != nil && obs.upgrade.Phase != phaseComplete {
		return nil
	}
	log := logf.FromContext(ctx)
	now := r.Now()
	var restarted []string
	for i := range obs.missedPods {
		p := &corev1.Pod{ObjectMeta: obs.missedPods[i].ObjectMeta}
		w, err := r.podWorkload(ctx, p)
		if err != nil {
			return err
		}
		if w == nil {
			continue // a bare pod: nothing to restart it with; the event names it
		}
		key := workloadKey(w)
		if slices.Contains(restarted, key) || recentlyRestartedForMissedPods(w, now) {
			continue
		}
		if err := r.restart(ctx, w, now, restartedForMissedPods); err != nil {
			return err
		}
		restarted = append(restarted, key)
		log.Info("Restarted a workload whose pods run without a proxy", "workload", key, "pod", p.Namespace+"/"+p.Name)
	}
	if len(restarted) > 0 {
		r.event(mesh, false, reasonRestartedToInject, "Restart", "Restarted %s so that their pods get a proxy (spec.injection.missedPods: Restart)", strings.Join(restarted, ", "))
	}
	return nil
}

// recentlyRestartedForMissedPods: w's pod template says it was restarted for
// missed pods less than missedPodsCooldown ago.
func recentlyRestartedForMissedPods(w client.Object, now time.Time) bool {
	var tmpl *corev1.PodTemplateSpec
	switch o := w.(type) {
	case *appsv1.Deployment:
		tmpl = &o.Spec.Template
	case *appsv1.StatefulSet:
		tmpl = &o.Spec.Template
	case *appsv1.DaemonSet:
		tmpl = &o.Spec.Template
	default:
		return false
	}
	if tmpl.Annotations[AnnotationRestartedFor] != restartedForMissedPods {
		return false
	}
	at, err := time.Parse(time.RFC3339Nano, tmpl.Annotations[AnnotationRestartedAt])
	return err == nil && now.Sub(at) < missedPodsCooldown
}
