package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
)

// The rollout keeps no state of its own beyond status.upgrade: which
// workloads were restarted for this upgrade is read back from their pod
// template (mesh.weft.dev/restartedAt at or after status.upgrade.startTime,
// mesh.weft.dev/restartedFor the target revision),
// and which still run an old proxy from their pods' revision label. An
// operator restarted mid-upgrade therefore resumes exactly where it was.

const (
	phaseStarting   meshv1alpha1.UpgradePhase = "StartingRevision"
	phaseRestarting meshv1alpha1.UpgradePhase = "RestartingWorkloads"
	phasePaused     meshv1alpha1.UpgradePhase = "Paused"
	phaseRemoving   meshv1alpha1.UpgradePhase = "RemovingOldRevision"
	phaseComplete   meshv1alpha1.UpgradePhase = "Complete"
)

// workload is a Deployment, StatefulSet or DaemonSet the rollout may restart.
type workload struct {
	obj         client.Object
	key         string
	restartedAt time.Time
}

func workloadKey(o client.Object) string {
	kind := "Deployment"
	switch o.(type) {
	case *appsv1.StatefulSet:
		kind = "StatefulSet"
	case *appsv1.DaemonSet:
		kind = "DaemonSet"
	}
	return kind + "/" + o.GetNamespace() + "/" + o.GetName()
}

func restartedAt(o client.Object) time.Time {
	v := podTemplateAnnotations(o)[AnnotationRestartedAt]
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}
	}
	return t
}

// rolloutComplete is `kubectl rollout status` for the three kinds: the
// controller saw the change, every replica runs the new template and is
// available.
func rolloutComplete(o client.Object) bool {
	switch w := o.(type) {
	case *appsv1.Deployment:
		want := int32(1)
		if w.Spec.Replicas != nil {
			want = *w.Spec.Replicas
		}
		s := w.Status
		return s.ObservedGeneration >= w.Generation && s.UpdatedReplicas >= want && s.Replicas == s.UpdatedReplicas && s.AvailableReplicas >= want
	case *appsv1.StatefulSet:
		want := int32(1)
		if w.Spec.Replicas != nil {
			want = *w.Spec.Replicas
		}
		s := w.Status
		return s.ObservedGeneration >= w.Generation && s.UpdatedReplicas >= want && s.ReadyReplicas >= want &&
			(s.UpdateRevision == "" || s.CurrentRevision == s.UpdateRevision)
	case *appsv1.DaemonSet:
		s := w.Status
		return s.ObservedGeneration >= w.Generation && s.UpdatedNumberScheduled >= s.DesiredNumberScheduled && s.NumberAvailable >= s.DesiredNumberScheduled
	}
	return false
}

// reconcileRollout moves meshed workloads from old revisions to the desired
// one in health-gated batches, then removes the old revisions.
func (r *MeshControlPlaneReconciler) reconcileRollout(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane, obs *observation) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	now := r.Now().UTC()
	var old []revisionObservation
	for _, rev := range obs.revisions {
		if rev.Name != obs.desired.Revision {
			old = append(old, rev)
		}
	}
	prev := mesh.Status.Upgrade
	if len(old) == 0 {
		r.restartedMu.Lock()
		r.restarted = nil
		r.restartedMu.Unlock()
		if prev != nil && prev.To == obs.desired.Version {
			up := prev.DeepCopy()
			up.Phase = phaseComplete
			up.FailedWorkload = ""
			// The old revision is only removed once no pod uses it, so every
			// workload has moved, even if the status write that said so was
			// lost.
			up.WorkloadsUpdated = up.WorkloadsTotal
			obs.upgrade = up
		}
		return ctrl.Result{}, nil
	}

	var up *meshv1alpha1.UpgradeStatus
	if prev == nil || prev.To != obs.desired.Version || prev.Phase == phaseComplete || prev.StartTime == nil {
		from := make([]string, 0, len(old))
		for _, o := range old {
			from = append(from, o.Version)
		}
		up = &meshv1alpha1.UpgradeStatus{From: strings.Join(from, ","), To: obs.desired.Version, Phase: phaseStarting, StartTime: &metav1.Time{Time: now.Truncate(time.Second)}}
		obs.upgrade = up
		obs.upgradeMessage = fmt.Sprintf("starting control-plane revision %s beside %s", obs.desired.Revision, revisionNames(old))
		r.event(mesh, false, meshv1alpha1.ReasonUpgradeStarted, "Upgrade", "Upgrade from %s to %s started", up.From, up.To)
		// status.upgrade.startTime must be stored before any workload is
		// restarted: it is how a restarted operator tells this upgrade's
		// restarts from older ones.
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	up = prev.DeepCopy()
	obs.upgrade = up
	start := up.StartTime.UTC().Truncate(time.Second)

	if want, _ := obs.revision(obs.desired.Revision); !want.Available || obs.active != obs.desired.Revision {
		up.Phase = phaseStarting
		obs.upgradeMessage = fmt.Sprintf("waiting for Deployment %s/%s to become available", meshNamespace(mesh), RevisionObjectName(obs.desired.Revision))
		return ctrl.Result{RequeueAfter: rolloutInterval}, nil
	}

	oldNames := make([]string, 0, len(old))
	for _, o := range old {
		oldNames = append(oldNames, o.Name)
	}
	inv, err := r.inventory(ctx, mesh, oldNames, obs.desired.Revision, start)
	if err != nil {
		return ctrl.Result{}, err
	}
	if key, behind := r.restartedButPending(inv.pending, start, obs.desired.Revision); behind {
		// Counting it as pending would undercount the batch in flight and
		// let the next batch start early.
		log.V(1).Info("The cache is behind this operator's restarts; waiting for it", "workload", key)
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	up.WorkloadsTotal = int32(len(inv.restarted) + len(inv.pending))
	// Batches are counted from the workloads (each batch shares one
	// restartedAt), so a lost status write cannot lose count.
	batchTimes := map[time.Time]bool{}
	var inFlight []workload
	var updated int32
	for _, w := range inv.restarted {
		batchTimes[w.restartedAt] = true
		if rolloutComplete(w.obj) {
			updated++
		} else {
			inFlight = append(inFlight, w)
		}
	}
	up.WorkloadsUpdated = updated
	up.Batch = int32(len(batchTimes))

	if mesh.Spec.Upgrade.Strategy == meshv1alpha1.UpgradeManual && len(inv.pending) > 0 {
		up.Phase = phaseRestarting
		obs.upgradeMessage = fmt.Sprintf("manual upgrade: %d workloads still run revision %s; restart them to move them to %s", len(inv.pending), revisionNames(old), obs.desired.Revision)
		return ctrl.Result{RequeueAfter: resyncInterval}, nil
	}

	if len(inFlight) > 0 {
		batchStart := time.Time{}
		for _, w := range inFlight {
			if w.restartedAt.After(batchStart) {
				batchStart = w.restartedAt
			}
		}
		deadline := batchStart.Add(durationOr(mesh.Spec.Upgrade.BatchTimeout, 10*time.Minute))
		if r.Now().After(deadline) {
			failed := inFlight[0].key
			if up.FailedWorkload != failed {
				r.event(mesh, true, meshv1alpha1.ReasonBatchFailed, "Upgrade", "Paused the upgrade: %s did not become ready within %s", failed, durationOr(mesh.Spec.Upgrade.BatchTimeout, 10*time.Minute))
			}
			up.Phase = phasePaused
			up.FailedWorkload = failed
			obs.batchFailed = true
			obs.upgradeMessage = fmt.Sprintf("batch %d: %s did not become ready within %s; the rollout is paused until it is ready (fix it, or change spec.version to roll back)",
				up.Batch, failed, durationOr(mesh.Spec.Upgrade.BatchTimeout, 10*time.Minute))
			return ctrl.Result{RequeueAfter: resyncInterval}, nil
		}
		up.Phase = phaseRestarting
		up.FailedWorkload = ""
		obs.upgradeMessage = fmt.Sprintf("batch %d: waiting for %s to become ready", up.Batch, keys(inFlight))
		return shortest(ctrl.Result{RequeueAfter: rolloutInterval}, ctrl.Result{RequeueAfter: deadline.Sub(r.Now()) + time.Second}), nil
	}
	up.FailedWorkload = ""

	if len(inv.pending) > 0 {
		if mesh.Spec.Upgrade.Paused {
			up.Phase = phasePaused
			obs.upgradeMessage = fmt.Sprintf("paused by spec.upgrade.paused with %d of %d workloads updated", updated, up.WorkloadsTotal)
			return ctrl.Result{}, nil
		}
		if current, err := r.specIsCurrent(ctx, mesh); err != nil || !current {
			return ctrl.Result{RequeueAfter: time.Second}, err
		}
		n := batchSize(mesh, int(up.WorkloadsTotal))
		batch := inv.pending[:min(n, len(inv.pending))]
		if behind, err := r.cacheBehindRestarts(ctx, batch, start, obs.desired.Revision); err != nil || behind {
			return ctrl.Result{RequeueAfter: time.Second}, err
		}
		for _, w := range batch {
			if err := r.restart(ctx, w.obj, now, obs.desired.Revision); err != nil {
				return ctrl.Result{}, err
			}
			r.restartedMu.Lock()
			if r.restarted == nil {
				r.restarted = map[string]restartRecord{}
			}
			r.restarted[w.key] = restartRecord{target: obs.desired.Revision, at: now}
			r.restartedMu.Unlock()
		}
		up.Batch++
		up.Phase = phaseRestarting
		obs.upgradeMessage = fmt.Sprintf("batch %d: restarted %s", up.Batch, keys(batch))
		log.Info("Restarted a batch of meshed workloads", "batch", up.Batch, "workloads", keys(batch))
		r.event(mesh, false, meshv1alpha1.ReasonRestartingWorkloads, "Upgrade", "Batch %d: restarted %s", up.Batch, keys(batch))
		return ctrl.Result{RequeueAfter: rolloutInterval}, nil
	}

	if inv.leftoverPods > 0 {
		up.Phase = phaseRestarting
		obs.upgradeMessage = fmt.Sprintf("%d pods still run revision %s without a Deployment, StatefulSet or DaemonSet in an injected namespace to restart them (%s); delete or restart them to finish",
			inv.leftoverPods, revisionNames(old), strings.Join(inv.leftoverExamples, ", "))
		return ctrl.Result{RequeueAfter: resyncInterval}, nil
	}

	if inv.oldPods > 0 {
		up.Phase = phaseRestarting
		obs.upgradeMessage = fmt.Sprintf("every workload is restarted; waiting for %d pods of revision %s to go away", inv.oldPods, revisionNames(old))
		return ctrl.Result{RequeueAfter: rolloutInterval}, nil
	}

	if current, err := r.specIsCurrent(ctx, mesh); err != nil || !current {
		return ctrl.Result{RequeueAfter: time.Second}, err
	}
	up.Phase = phaseRemoving
	for _, rev := range old {
		if err := r.deleteRevision(ctx, mesh, rev.Name); err != nil {
			obs.upgradeMessage = fmt.Sprintf("removing revision %s: %v", rev.Name, err)
			return ctrl.Result{}, err
		}
		r.event(mesh, false, meshv1alpha1.ReasonRemovingOldRevision, "Upgrade", "Removed control-plane revision %s: no proxy uses it", rev.Name)
	}
	up.Phase = phaseComplete
	obs.revisions = slices.DeleteFunc(obs.revisions, func(rv revisionObservation) bool { return rv.Name != obs.desired.Revision })
	r.event(mesh, false, meshv1alpha1.ReasonUpgradeComplete, "Upgrade", "Upgrade from %s to %s complete", up.From, up.To)
	return ctrl.Result{}, nil
}

// specIsCurrent guards the rollout's irreversible steps (restarting
// workloads, deleting a revision): the cached spec they act on must not be a
// stale copy from before a pause, a rollback or a new version.
func (r *MeshControlPlaneReconciler) specIsCurrent(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane) (bool, error) {
	fresh := &meshv1alpha1.MeshControlPlane{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(mesh), fresh); err != nil {
		return false, fmt.Errorf("re-reading the MeshControlPlane: %w", err)
	}
	return fresh.Generation == mesh.Generation, nil
}

func batchSize(mesh *meshv1alpha1.MeshControlPlane, total int) int {
	n := int(mesh.Spec.Upgrade.BatchSize)
	if n < 1 {
		n = 5
	}
	maxUnavailable := mesh.Spec.Upgrade.MaxUnavailable
	if maxUnavailable.Type == intstr.Int && maxUnavailable.IntVal == 0 && maxUnavailable.StrVal == "" {
		maxUnavailable = intstr.FromString("25%")
	}
	if mu, err := intstr.GetScaledValueFromIntOrPercent(&maxUnavailable, total, true); err == nil && mu >= 1 && mu < n {
		n = mu
	}
	return n
}

func keys(ws []workload) string {
	out := make([]string, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.key)
	}
	return strings.Join(out, ", ")
}

func revisionNames(revs []revisionObservation) string {
	out := make([]string, 0, len(revs))
	for _, r := range revs {
		out = append(out, r.Name)
	}
	return strings.Join(out, ", ")
}

// inventory is what the rollout has to do.
type inventory struct {
	// restarted: workloads restarted for this upgrade (ready or not).
	restarted []workload
	// pending: workloads whose pods run an old revision, not yet restarted.
	pending []workload
	// leftoverPods run an old revision and have no workload the rollout
	// may restart (bare pods, Jobs, namespaces no longer injected).
	leftoverPods     int
	leftoverExamples []string
	// oldPods is every pod still on an old revision: the revision is
	// removed only when it reaches zero.
	oldPods int
}

func (r *MeshControlPlaneReconciler) inventory(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane, oldRevs []string, target string, start time.Time) (inventory, error) {
	var inv inventory
	sel, err := metav1.LabelSelectorAsSelector(injectionSelector(mesh))
	if err != nil {
		return inv, fmt.Errorf("spec.injection.namespaceSelector: %w", err)
	}
	var nsList corev1.NamespaceList
	if err := r.Client.List(ctx, &nsList, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return inv, fmt.Errorf("listing injected namespaces: %w", err)
	}
	injected := map[string]bool{}
	for _, ns := range nsList.Items {
		if ns.Name != meshNamespace(mesh) && ns.Name != "kube-system" && ns.Name != "kube-public" {
			injected[ns.Name] = true
		}
	}

	// Every Deployment event of a rollout reconciles, and each reconcile
	// reads every workload and meshed pod: the lists share the cache's
	// objects instead of copying thousands of them each time. Nothing here
	// or in the callers modifies them; restart patches pending workloads,
	// which are separate copies read by podWorkload.
	seen := map[string]bool{}
	for ns := range injected {
		for _, list := range []client.ObjectList{&appsv1.DeploymentList{}, &appsv1.StatefulSetList{}, &appsv1.DaemonSetList{}} {
			if err := r.Client.List(ctx, list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
				return inv, fmt.Errorf("listing workloads in %s: %w", ns, err)
			}
			for _, o := range workloadItems(list) {
				// status.upgrade.startTime has whole seconds only: the
				// target revision tells this upgrade's restarts from those
				// of an upgrade rolled back within the same second.
				if t := restartedAt(o); !t.IsZero() && !t.Before(start) && podTemplateAnnotations(o)[AnnotationRestartedFor] == target {
					w := workload{obj: o, key: workloadKey(o), restartedAt: t}
					seen[w.key] = true
					inv.restarted = append(inv.restarted, w)
				}
			}
		}
	}

	var pods corev1.PodList
	req, err := labels.NewRequirement(meshv1alpha1.LabelRevision, "in", oldRevs)
	if err != nil {
		return inv, err
	}
	if err := r.Client.List(ctx, &pods, client.MatchingLabelsSelector{Selector: labels.NewSelector().Add(*req)}, client.UnsafeDisableDeepCopy); err != nil {
		return inv, fmt.Errorf("listing meshed pods: %w", err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Namespace == meshNamespace(mesh) || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		inv.oldPods++
		var owner client.Object
		if injected[p.Namespace] {
			owner, err = r.podWorkload(ctx, p)
			if err != nil {
				return inv, err
			}
		}
		if owner == nil {
			inv.leftoverPods++
			if len(inv.leftoverExamples) < 3 {
				inv.leftoverExamples = append(inv.leftoverExamples, "Pod/"+p.Namespace+"/"+p.Name)
			}
			continue
		}
		key := workloadKey(owner)
		if seen[key] {
			continue
		}
		seen[key] = true
		inv.pending = append(inv.pending, workload{obj: owner, key: key})
	}
	sortWorkloads := func(ws []workload) {
		slices.SortFunc(ws, func(a, b workload) int { return compareStrings(a.key, b.key) })
	}
	sortWorkloads(inv.restarted)
	sortWorkloads(inv.pending)
	return inv, nil
}

func workloadItems(list client.ObjectList) []client.Object {
	var out []client.Object
	switch l := list.(type) {
	case *appsv1.DeploymentList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *appsv1.StatefulSetList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *appsv1.DaemonSetList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	}
	return out
}

// podWorkload follows a pod's controller reference to the Deployment (through
// its ReplicaSet), StatefulSet or DaemonSet; nil when there is none.
func (r *MeshControlPlaneReconciler) podWorkload(ctx context.Context, p *corev1.Pod) (client.Object, error) {
	ref := metav1.GetControllerOf(p)
	if ref == nil {
		return nil, nil
	}
	get := func(obj client.Object, name string) (client.Object, error) {
		if err := r.Client.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: name}, obj); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, nil
			}
			return nil, fmt.Errorf("reading the owner of pod %s/%s: %w", p.Namespace, p.Name, err)
		}
		return obj, nil
	}
	switch {
	case ref.Kind == "ReplicaSet" && strings.HasPrefix(ref.APIVersion, "apps/"):
		// Only the owner reference is needed: the cache then holds the
		// metadata of ReplicaSets, not every pod template of every
		// revision of every Deployment in the cluster.
		meta := &metav1.PartialObjectMetadata{}
		meta.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))
		rs, err := get(meta, ref.Name)
		if rs == nil || err != nil {
			return nil, err
		}
		dref := metav1.GetControllerOf(rs)
		if dref == nil || dref.Kind != "Deployment" {
			return nil, nil
		}
		return get(&appsv1.Deployment{}, dref.Name)
	case ref.Kind == "StatefulSet" && strings.HasPrefix(ref.APIVersion, "apps/"):
		return get(&appsv1.StatefulSet{}, ref.Name)
	case ref.Kind == "DaemonSet" && strings.HasPrefix(ref.APIVersion, "apps/"):
		return get(&appsv1.DaemonSet{}, ref.Name)
	}
	return nil, nil
}

// restartedButPending finds a workload the cache still shows as pending
// although this process restarted it for this upgrade: the watch has not
// delivered the patch yet. It covers every pending workload at no cost;
// cacheBehindRestarts covers what this process does not remember. A record
// older than cacheLagBound no longer counts: by then the workload is pending
// for real (someone, a GitOps tool say, reverted the annotation) and must be
// restarted again rather than waited for.
func (r *MeshControlPlaneReconciler) restartedButPending(pending []workload, start time.Time, target string) (string, bool) {
	r.restartedMu.Lock()
	defer r.restartedMu.Unlock()
	now := r.Now()
	for _, w := range pending {
		if rec, ok := r.restarted[w.key]; ok && rec.target == target && !rec.at.Before(start) && now.Sub(rec.at) < cacheLagBound {
			return w.key, true
		}
	}
	return "", false
}

// cacheLagBound is how long the cache may take to show a restart patch.
const cacheLagBound = 30 * time.Second

// cacheBehindRestarts reads the next batch's workloads from the API server
// and reports whether any of them was already restarted for this upgrade.
// A reconcile can run before the watch has delivered the operator's own
// patches of the previous batch; the cache then still shows those
// workloads as pending, and restarting from it would restart them twice
// (and with them more workloads at once than the batch size allows). The
// events of those patches reconcile again once the cache has them.
func (r *MeshControlPlaneReconciler) cacheBehindRestarts(ctx context.Context, batch []workload, start time.Time, target string) (bool, error) {
	for _, w := range batch {
		fresh, ok := w.obj.DeepCopyObject().(client.Object)
		if !ok {
			return false, fmt.Errorf("%s: cannot copy the workload", w.key)
		}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(w.obj), fresh); err != nil {
			if apierrors.IsNotFound(err) {
				return true, nil // deleted since: the cache will say so
			}
			return false, fmt.Errorf("reading %s: %w", w.key, err)
		}
		if t := restartedAt(fresh); !t.IsZero() && !t.Before(start) && podTemplateAnnotations(fresh)[AnnotationRestartedFor] == target {
			logf.FromContext(ctx).V(1).Info("The cache is behind the last batch's restarts; waiting for it", "workload", w.key)
			return true, nil
		}
	}
	return false, nil
}

// restart sets the pod-template annotation, as `kubectl rollout restart`
// does, with a merge patch that touches nothing else of the user's object.
// obj must be the caller's own copy: the patch response is decoded into it.
func (r *MeshControlPlaneReconciler) restart(ctx context.Context, obj client.Object, now time.Time, revision string) error {
	patch := fmt.Appendf(nil, `{"spec":{"template":{"metadata":{"annotations":{%q:%q,%q:%q}}}}}`,
		AnnotationRestartedAt, now.UTC().Format(time.RFC3339Nano), AnnotationRestartedFor, revision)
	if err := r.Client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("restarting %s: %w", workloadKey(obj), err)
	}
	return nil
}

// deleteRevision removes an old revision's objects; already-gone ones are fine.
func (r *MeshControlPlaneReconciler) deleteRevision(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane, rev string) error {
	ns := meshNamespace(mesh)
	name := RevisionObjectName(rev)
	for _, obj := range []client.Object{
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}},
		&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ProxyStatusPrefix + rev}},
	} {
		if err := r.Client.Delete(ctx, obj, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting %T %s: %w", obj, name, err)
		}
	}
	return nil
}
