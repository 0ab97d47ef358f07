package controllers

import (
	"context"
	"fmt"
	"slices"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/images"
)

// observation is what the phases saw; computeStatus turns it into status.
type observation struct {
	conflictWith string
	versionErr   error
	applyErr     error
	desired      images.Set
	revisions    []revisionObservation
	active       string
	certs        certObservation
	proxies      proxyReport
	// proxiesObserved: the proxy counts were read this time; otherwise
	// status keeps the last ones.
	proxiesObserved bool
	// uninjected counts pods in injected namespaces without a proxy; -1
	// when they could not be counted.
	uninjected int32
	// missedPods are (up to maxMissedPods of) those pods, when they were
	// listed this time (missedCounted).
	missedPods    []metav1.PartialObjectMetadata
	missedCounted bool
	upgrade       *meshv1alpha1.UpgradeStatus
	// upgradeMessage explains the rollout's current step to a person.
	upgradeMessage string
	batchFailed    bool
	// reconciled is true when every phase ran to the end.
	reconciled bool
}

type revisionObservation struct {
	Name, Version string
	Available     bool
}

func (o *observation) revision(name string) (revisionObservation, bool) {
	for _, r := range o.revisions {
		if r.Name == name {
			return r, true
		}
	}
	return revisionObservation{}, false
}

func (r *MeshControlPlaneReconciler) reconcilePhases(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane, obs *observation) (ctrl.Result, error) {
	log := logf.FromContext(ctx)
	if err := r.observeRevisions(ctx, mesh, obs); err != nil {
		return ctrl.Result{}, err
	}
	img, err := images.For(mesh.Spec.Version, mesh.Spec.Registry)
	if err != nil {
		// A spec problem: report it and wait for the spec to change.
		obs.versionErr = err
		r.event(mesh, true, meshv1alpha1.ReasonUnknownVersion, "Validate", "%s", err.Error())
		log.Info("Refusing an unknown version", "version", mesh.Spec.Version)
		return ctrl.Result{}, nil
	}
	obs.desired = img
	if _, err := metav1.LabelSelectorAsSelector(injectionSelector(mesh)); err != nil {
		// A spec problem the schema does not catch: report it, do not retry
		// until the spec changes.
		obs.applyErr = fmt.Errorf("spec.injection.namespaceSelector is not a valid label selector: %w", err)
		r.event(mesh, true, meshv1alpha1.ReasonApplyFailed, "Validate", "%s", obs.applyErr.Error())
		return ctrl.Result{}, nil
	}

	if err := r.ensureNamespace(ctx, mesh); err != nil {
		obs.applyErr = err
		return ctrl.Result{}, err
	}
	for _, obj := range []client.Object{
		RenderServiceAccount(mesh), RenderClusterRole(mesh), RenderClusterRoleBinding(mesh),
		RenderRole(mesh), RenderRoleBinding(mesh),
	} {
		if err := r.apply(ctx, obj); err != nil {
			obs.applyErr = err
			return ctrl.Result{}, err
		}
	}

	names := []string{img.Revision}
	for _, rev := range obs.revisions {
		names = append(names, rev.Name)
	}
	renewal, err := r.reconcileCertificates(ctx, mesh, obs, names)
	if err != nil {
		obs.applyErr = err
		return ctrl.Result{}, err
	}
	if !obs.certs.Ready {
		return ctrl.Result{RequeueAfter: waitInterval}, nil
	}

	for _, obj := range []client.Object{RenderDeployment(mesh, img), RenderService(mesh, img), RenderPDB(mesh, img)} {
		if err := r.apply(ctx, obj); err != nil {
			obs.applyErr = err
			return ctrl.Result{}, err
		}
	}
	if _, known := obs.revision(img.Revision); !known {
		r.event(mesh, false, meshv1alpha1.ReasonRevisionStarting, "Install", "Started control-plane revision %s (%s)", img.Revision, img.Version)
	}
	if err := r.observeRevisions(ctx, mesh, obs); err != nil {
		return ctrl.Result{}, err
	}

	if err := r.reconcileWebhook(ctx, mesh, obs); err != nil {
		obs.applyErr = err
		return ctrl.Result{}, err
	}
	r.observeProxies(ctx, mesh, obs)
	r.observeUninjected(ctx, mesh, obs)

	res, err := r.reconcileRollout(ctx, mesh, obs)
	if err != nil {
		return res, err
	}
	if err := r.reconcileMissedPods(ctx, mesh, obs); err != nil {
		return res, err
	}
	obs.reconciled = true
	return shortest(res, ctrl.Result{RequeueAfter: resyncInterval}, untilRenewal(renewal, r.Now())), nil
}

func untilRenewal(at, now time.Time) ctrl.Result {
	if at.IsZero() {
		return ctrl.Result{}
	}
	d := at.Sub(now)
	if d < time.Second {
		d = time.Second
	}
	return ctrl.Result{RequeueAfter: d}
}

// shortest picks the earliest requeue of several.
func shortest(results ...ctrl.Result) ctrl.Result {
	var out ctrl.Result
	for _, r := range results {
		if r.RequeueAfter > 0 && (out.RequeueAfter == 0 || r.RequeueAfter < out.RequeueAfter) {
			out.RequeueAfter = r.RequeueAfter
		}
	}
	return out
}

// ensureNamespace creates the mesh namespace when missing, labelled so that
// it is never injected. An existing namespace is left as the user made it.
func (r *MeshControlPlaneReconciler) ensureNamespace(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane) error {
	ns := &corev1.Namespace{}
	err := r.Client.Get(ctx, client.ObjectKey{Name: meshNamespace(mesh)}, ns)
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading namespace %s: %w", meshNamespace(mesh), err)
	}
	ns = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: meshNamespace(mesh),
		Labels: map[string]string{
			LabelPartOf:              PartOf,
			LabelManagedBy:           ManagedBy,
			meshv1alpha1.LabelInject: "disabled",
		},
	}}
	if err := r.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", ns.Name, err)
	}
	return nil
}

// observeRevisions lists the control-plane revisions of this mesh from their
// Deployments: the cluster, not status, is the record of what runs.
func (r *MeshControlPlaneReconciler) observeRevisions(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane, obs *observation) error {
	var list appsv1.DeploymentList
	if err := r.Client.List(ctx, &list, client.InNamespace(meshNamespace(mesh)), client.MatchingLabels{
		LabelComponent: ComponentControlPlane, LabelManagedBy: ManagedBy, LabelMesh: mesh.Name,
	}); err != nil {
		return fmt.Errorf("listing control-plane revisions: %w", err)
	}
	obs.revisions = obs.revisions[:0]
	for _, d := range list.Items {
		rev := d.Labels[meshv1alpha1.LabelRevision]
		if rev == "" || !d.DeletionTimestamp.IsZero() {
			continue
		}
		obs.revisions = append(obs.revisions, revisionObservation{Name: rev, Version: d.Labels[LabelVersion], Available: deploymentAvailable(&d)})
	}
	slices.SortFunc(obs.revisions, func(a, b revisionObservation) int { return compareStrings(a.Name, b.Name) })
	return nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func deploymentAvailable(d *appsv1.Deployment) bool {
	if d.Status.ObservedGeneration < d.Generation {
		return false
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// reconcileWebhook points injection at the desired revision once it is
// available, and until then keeps it on the revision that serves now, so
// that pods are never sent to an injector that is not up.
func (r *MeshControlPlaneReconciler) reconcileWebhook(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane, obs *observation) error {
	current := ""
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: WebhookConfigName}, mwc); err == nil {
		current = mwc.Labels[meshv1alpha1.LabelRevision]
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading the webhook configuration: %w", err)
	}
	active := obs.desired.Revision
	if want, _ := obs.revision(active); !want.Available {
		if cur, ok := obs.revision(current); ok && cur.Available {
			active = current
		}
	}
	if err := r.apply(ctx, RenderWebhook(mesh, active, obs.certs.Bundle)); err != nil {
		return err
	}
	if current != active {
		r.event(mesh, false, meshv1alpha1.ReasonReconciling, "Inject", "Injection now uses control-plane revision %s", active)
	}
	obs.active = active
	return nil
}

// observeProxies sums the proxy counts each control-plane replica reports.
// A ConfigMap that cannot be read only leaves the counts out: it must not stop
// the rest of the reconcile.
func (r *MeshControlPlaneReconciler) observeProxies(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane, obs *observation) {
	log := logf.FromContext(ctx)
	obs.proxies = proxyReport{ByVersion: map[string]int32{}, ByRevision: map[string]int32{}}
	obs.proxiesObserved = true
	for _, rev := range obs.revisions {
		cm := &corev1.ConfigMap{}
		err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: meshNamespace(mesh), Name: ProxyStatusPrefix + rev.Name}, cm)
		if err != nil {
			if !apierrors.IsNotFound(err) {
				log.Error(err, "Reading proxy status", "revision", rev.Name)
			}
			continue
		}
		rep, errs := sumProxyStatus(cm.Data, r.Now())
		for _, e := range errs {
			log.Info("Ignoring a malformed proxy status entry", "configMap", cm.Name, "error", e.Error())
		}
		obs.proxies.add(rev.Name, rep)
	}
}

// observeUninjected counts running pods in injected namespaces that have no
// proxy and did not opt out: pods created while the injector was down (with
// failurePolicy Ignore) or before the namespace was labelled. Only metadata
// is listed, uncached, since the cache holds meshed pods only: one List per
// injected namespace. During a rollout every event of a restarted workload
// reconciles, so the count is then refreshed at most once per resyncInterval
// and the last one is reused in between.
func (r *MeshControlPlaneReconciler) observeUninjected(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane, obs *observation) {
	obs.uninjected = -1
	now := r.Now()
	rolling := mesh.Status.Upgrade != nil && mesh.Status.Upgrade.Phase != phaseComplete
	r.uninjectedMu.Lock()
	last := r.uninjected
	r.uninjectedMu.Unlock()
	if rolling && last.mesh == mesh.UID && !now.Before(last.at) && now.Sub(last.at) < resyncInterval {
		obs.uninjected = last.n
		return
	}
	n, missed, ok := r.countUninjected(ctx, mesh)
	if !ok {
		return
	}
	obs.missedPods, obs.missedCounted = missed, true
	r.uninjectedMu.Lock()
	r.uninjected = uninjectedCount{mesh: mesh.UID, at: now, n: n}
	r.uninjectedMu.Unlock()
	obs.uninjected = n
}

// uninjectedCount is the last count of observeUninjected.
type uninjectedCount struct {
	mesh types.UID
	at   time.Time
	n    int32
}

func (r *MeshControlPlaneReconciler) countUninjected(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane) (int32, []metav1.PartialObjectMetadata, bool) {
	log := logf.FromContext(ctx)
	sel, err := metav1.LabelSelectorAsSelector(injectionSelector(mesh))
	if err != nil {
		return 0, nil, false
	}
	var nsList corev1.NamespaceList
	if err := r.Client.List(ctx, &nsList, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		log.Error(err, "Listing injected namespaces")
		return 0, nil, false
	}
	unmeshed, _ := labels.NewRequirement(meshv1alpha1.LabelRevision, selection.DoesNotExist, nil)
	var n int32
	var missed []metav1.PartialObjectMetadata
	for _, ns := range nsList.Items {
		if ns.Name == meshNamespace(mesh) || ns.Name == "kube-system" || ns.Name == "kube-public" || ns.Labels[meshv1alpha1.LabelInject] == "disabled" {
			continue
		}
		pods := &metav1.PartialObjectMetadataList{}
		pods.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
		if err := r.APIReader.List(ctx, pods, client.InNamespace(ns.Name), client.MatchingLabelsSelector{Selector: labels.NewSelector().Add(*unmeshed)}); err != nil {
			log.Error(err, "Listing pods without a proxy", "namespace", ns.Name)
			return 0, nil, false
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil || p.Labels[meshv1alpha1.LabelInject] == "disabled" || p.Annotations[meshv1alpha1.LabelInject] == "disabled" {
				continue
			}
			// The injector saw this pod and said why it left it out
			// (host network, an exclusion): another admission would
			// decide the same, so it is neither counted nor restarted.
			if _, skipped := p.Annotations[annotationInjectSkipped]; skipped {
				continue
			}
			n++
			if len(missed) < maxMissedPods {
				missed = append(missed, p)
			}
		}
	}
	return n, missed, true
}
