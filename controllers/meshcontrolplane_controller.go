package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
)

// FieldOwner is the server-side apply field manager of everything the
// operator renders.
const FieldOwner = "weft-operator"

// Finalizer removes the cluster-scoped objects (webhook configuration,
// ClusterRole and binding) that garbage collection would also remove, but
// only eventually; with it, deleting the mesh stops injection at once.
const Finalizer = "mesh.weft.dev/cleanup"

// Requeue intervals: proxy counts are reported by the control plane every
// minute or so, and a rollout's readiness is re-checked while it runs.
const (
	resyncInterval  = 30 * time.Second
	rolloutInterval = 5 * time.Second
	waitInterval    = 10 * time.Second
)

// MeshControlPlaneReconciler installs a MeshControlPlane, keeps its
// certificates valid, rolls proxies forward on upgrade and reports status.
type MeshControlPlaneReconciler struct {
	Client client.Client
	// APIReader reads Secrets and ConfigMaps that the cache does not hold
	// (the control plane's proxy-status ConfigMaps).
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  recorder.EventRecorder
	// Now is the clock; tests move it to expire certificates and batches.
	Now func() time.Time

	// uninjected is the last count of pods without a proxy (see
	// observeUninjected).
	uninjectedMu sync.Mutex
	uninjected   uninjectedCount

	// applied remembers what apply last sent, so that a reconcile whose
	// rendering did not change does not send it again (see apply).
	appliedMu sync.Mutex
	applied   map[appliedKey]appliedState

	// restarted records the workloads this process restarted for the
	// upgrade in progress, so that a cache that has not caught up with
	// those patches is recognised (see reconcileRollout).
	restartedMu sync.Mutex
	restarted   map[string]restartRecord
}

type restartRecord struct {
	target string
	at     time.Time
}

type appliedKey struct {
	gvk schema.GroupVersionKind
	key client.ObjectKey
}

type appliedState struct {
	hash   [sha256.Size]byte // of the applied configuration
	marker string            // the object's version right after the apply
	at     time.Time
}

// reapplyEvery bounds how long an object is trusted to be as applied
// without sending it again. Changes by others to the spec of an object are
// seen at once (its generation or resourceVersion moves); this also covers
// edits that move neither, such as a label changed on a Deployment.
const reapplyEvery = 10 * time.Minute

// versionMarker is what says an object changed since we applied it: its
// UID (an object deleted and created again by someone else starts again at
// generation 1), then its generation where the type has one (so a
// Deployment's status updates do not count), its resourceVersion otherwise.
func versionMarker(o metav1.Object) string {
	if g := o.GetGeneration(); g > 0 {
		return string(o.GetUID()) + "/g" + strconv.FormatInt(g, 10)
	}
	return string(o.GetUID()) + "/rv" + o.GetResourceVersion()
}

// CacheOptions limits what the operator caches: Weft's own Secrets and
// ConfigMaps, and only meshed pods, so memory does not grow with every Secret
// and Pod in the cluster.
func CacheOptions() cache.Options {
	partOf := labels.SelectorFromSet(labels.Set{LabelPartOf: PartOf})
	meshed, _ := labels.NewRequirement(meshv1alpha1.LabelRevision, selection.Exists, nil)
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}:    {Label: partOf},
		&corev1.ConfigMap{}: {Label: partOf},
		&corev1.Pod{}:       {Label: labels.NewSelector().Add(*meshed)},
	}}
}

// SetupWithManager registers the reconciler. The cert-manager Certificate is
// watched only when its CRD is installed, so the operator also runs in
// clusters without cert-manager.
func (r *MeshControlPlaneReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Client == nil {
		r.Client = mgr.GetClient()
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Scheme == nil {
		r.Scheme = mgr.GetScheme()
	}
	if r.Recorder == nil {
		r.Recorder = mgr.GetEventRecorder("weft-operator")
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	owner := func() handler.EventHandler {
		return handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(), &meshv1alpha1.MeshControlPlane{}, handler.OnlyControllerOwner())
	}
	all := handler.EnqueueRequestsFromMapFunc(r.allMeshes)
	restarted := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return podTemplateAnnotations(o)[AnnotationRestartedAt] != ""
	})
	b := ctrl.NewControllerManagedBy(mgr).
		Named("meshcontrolplane").
		// Every MeshControlPlane event reconciles all of them, so that a
		// second one leaves Conflict as soon as the first is deleted.
		Watches(&meshv1alpha1.MeshControlPlane{}, all).
		Watches(&appsv1.Deployment{}, owner()).
		Watches(&corev1.Service{}, owner()).
		Watches(&corev1.ServiceAccount{}, owner()).
		Watches(&policyv1.PodDisruptionBudget{}, owner()).
		Watches(&rbacv1.ClusterRole{}, owner()).
		Watches(&rbacv1.ClusterRoleBinding{}, owner()).
		Watches(&rbacv1.Role{}, owner()).
		Watches(&rbacv1.RoleBinding{}, owner()).
		Watches(&admissionregistrationv1.MutatingWebhookConfiguration{}, owner()).
		// Secrets include the one cert-manager writes (labelled through the
		// Certificate's secretTemplate).
		Watches(&corev1.Secret{}, all).
		Watches(&corev1.ConfigMap{}, all).
		// A meshed pod going away may be the last one on an old revision;
		// other pod events change nothing the operator decides.
		Watches(&corev1.Pod{}, all, builder.WithPredicates(podDeleted)).
		// Workloads the rollout restarted: their readiness gates the next batch.
		Watches(&appsv1.Deployment{}, all, builder.WithPredicates(restarted)).
		Watches(&appsv1.StatefulSet{}, all, builder.WithPredicates(restarted)).
		Watches(&appsv1.DaemonSet{}, all, builder.WithPredicates(restarted))
	if _, err := mgr.GetRESTMapper().RESTMapping(cmv1.SchemeGroupVersion.WithKind("Certificate").GroupKind(), cmv1.SchemeGroupVersion.Version); err == nil {
		b = b.Watches(&cmv1.Certificate{}, owner())
	} else {
		mgr.GetLogger().Info("cert-manager is not installed: identity.certManager will report IssuerNotReady", "error", err.Error())
	}
	return b.Complete(r)
}

var podDeleted = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	UpdateFunc:  func(event.UpdateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return true },
	GenericFunc: func(event.GenericEvent) bool { return false },
}

func (r *MeshControlPlaneReconciler) allMeshes(ctx context.Context, _ client.Object) []reconcile.Request {
	var list meshv1alpha1.MeshControlPlaneList
	if err := r.Client.List(ctx, &list); err != nil {
		logf.FromContext(ctx).Error(err, "Listing MeshControlPlanes")
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for _, m := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: m.Name}})
	}
	return out
}

// Reconcile reads the mesh, runs the phases and writes status once.
func (r *MeshControlPlaneReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, err error) {
	mesh := &meshv1alpha1.MeshControlPlane{}
	if err := r.Client.Get(ctx, req.NamespacedName, mesh); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !mesh.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, mesh)
	}

	active, err := r.activeMesh(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	obs := &observation{}
	orig := mesh.DeepCopy()
	defer func() {
		if serr := r.writeStatus(ctx, orig, mesh, obs); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	if active != mesh.Name {
		obs.conflictWith = active
		if c := meta.FindStatusCondition(mesh.Status.Conditions, meshv1alpha1.ConditionReady); c == nil || c.Reason != meshv1alpha1.ReasonConflict {
			r.event(mesh, true, meshv1alpha1.ReasonConflict, "Reconcile", "MeshControlPlane %s already manages this cluster; this one stays inactive", active)
		}
		return ctrl.Result{}, nil
	}
	if !controllerutil.ContainsFinalizer(mesh, Finalizer) {
		patch := client.MergeFrom(mesh.DeepCopy())
		controllerutil.AddFinalizer(mesh, Finalizer)
		if err := r.Client.Patch(ctx, mesh, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding the finalizer: %w", err)
		}
		orig = mesh.DeepCopy()
	}
	return r.reconcilePhases(ctx, mesh, obs)
}

// activeMesh is the oldest MeshControlPlane (ties broken by name): the only
// one that acts. Creation order is stable across operator restarts.
func (r *MeshControlPlaneReconciler) activeMesh(ctx context.Context) (string, error) {
	var list meshv1alpha1.MeshControlPlaneList
	if err := r.Client.List(ctx, &list); err != nil {
		return "", fmt.Errorf("listing MeshControlPlanes: %w", err)
	}
	if len(list.Items) == 0 {
		return "", nil
	}
	slices.SortFunc(list.Items, func(a, b meshv1alpha1.MeshControlPlane) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	return list.Items[0].Name, nil
}

// finalize deletes the cluster-scoped children of this mesh and releases it.
// Objects already gone, or owned by another mesh, are left alone.
func (r *MeshControlPlaneReconciler) finalize(ctx context.Context, mesh *meshv1alpha1.MeshControlPlane) error {
	if !controllerutil.ContainsFinalizer(mesh, Finalizer) {
		return nil
	}
	log := logf.FromContext(ctx)
	for _, obj := range []client.Object{
		&admissionregistrationv1.MutatingWebhookConfiguration{},
		&rbacv1.ClusterRoleBinding{},
		&rbacv1.ClusterRole{},
	} {
		name := ControlPlaneName
		if _, ok := obj.(*admissionregistrationv1.MutatingWebhookConfiguration); ok {
			name = WebhookConfigName
		}
		if err := r.Client.Get(ctx, client.ObjectKey{Name: name}, obj); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return fmt.Errorf("reading %s: %w", name, err)
		}
		if !metav1IsControlledBy(obj, mesh) {
			continue
		}
		if err := r.Client.Delete(ctx, obj); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting %s: %w", name, err)
		}
		log.Info("Deleted a cluster-scoped object of the mesh", "name", name)
	}
	patch := client.MergeFrom(mesh.DeepCopy())
	controllerutil.RemoveFinalizer(mesh, Finalizer)
	if err := r.Client.Patch(ctx, mesh, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("removing the finalizer: %w", err)
	}
	return nil
}

func metav1IsControlledBy(obj client.Object, mesh *meshv1alpha1.MeshControlPlane) bool {
	for _, ref := range obj.GetOwnerReferences() {
		if ref.UID == mesh.UID {
			return true
		}
	}
	return false
}

// apply server-side applies a rendered object under FieldOwner. Status and
// the creation timestamp are dropped: they are not ours to set, and a zero
// value would fight the API server.
func (r *MeshControlPlaneReconciler) apply(ctx context.Context, obj client.Object) error {
	gvk, err := apiutil.GVKForObject(obj, r.Scheme)
	if err != nil {
		return err
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return err
	}
	delete(u, "status")
	unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
	uo := &unstructured.Unstructured{Object: u}
	uo.SetGroupVersionKind(gvk)
	// Server-side apply of an unchanged configuration is a no-op for the
	// API server, but it is still a write request per object per
	// reconcile, and reconciles are frequent during an upgrade. Skip it
	// when the rendering is what we last applied and the cached object has
	// not changed since.
	k := appliedKey{gvk: gvk, key: client.ObjectKeyFromObject(obj)}
	raw, err := json.Marshal(u)
	if err != nil {
		return err
	}
	hash := sha256.Sum256(raw)
	if r.unchangedSinceApplied(ctx, k, hash, obj) {
		return nil
	}
	if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(uo), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		r.forgetApplied(k)
		return fmt.Errorf("applying %s %s: %w", gvk.Kind, k.key, err)
	}
	r.appliedMu.Lock()
	if r.applied == nil {
		r.applied = map[appliedKey]appliedState{}
	}
	r.applied[k] = appliedState{hash: hash, marker: versionMarker(uo), at: r.Now()}
	r.appliedMu.Unlock()
	return nil
}

// unchangedSinceApplied reports whether obj's rendering hashes to what was
// last applied for k, recently, and the cached object still carries the
// version that apply returned. Any doubt (not in the cache, a read error)
// means apply again.
func (r *MeshControlPlaneReconciler) unchangedSinceApplied(ctx context.Context, k appliedKey, hash [sha256.Size]byte, obj client.Object) bool {
	r.appliedMu.Lock()
	st, ok := r.applied[k]
	r.appliedMu.Unlock()
	if !ok || st.hash != hash || r.Now().Sub(st.at) >= reapplyEvery {
		return false
	}
	live, ok := obj.DeepCopyObject().(client.Object)
	if !ok {
		return false
	}
	if err := r.Client.Get(ctx, k.key, live); err != nil {
		return false
	}
	return versionMarker(live) == st.marker
}

func (r *MeshControlPlaneReconciler) forgetApplied(k appliedKey) {
	r.appliedMu.Lock()
	delete(r.applied, k)
	r.appliedMu.Unlock()
}

func (r *MeshControlPlaneReconciler) event(mesh *meshv1alpha1.MeshControlPlane, warning bool, reason, action, format string, args ...any) {
	if r.Recorder == nil {
		return
	}
	typ := corev1.EventTypeNormal
	if warning {
		typ = corev1.EventTypeWarning
	}
	r.Recorder.Eventf(mesh, nil, typ, reason, action, format, args...)
}

// writeStatus computes status from what the phases observed and patches it
// if it changed.
func (r *MeshControlPlaneReconciler) writeStatus(ctx context.Context, orig, mesh *meshv1alpha1.MeshControlPlane, obs *observation) error {
	next := computeStatus(mesh, obs, r.Now())
	if equalStatus(orig.Status, next) {
		return nil
	}
	mesh.Status = next
	// The optimistic lock matters: a merge patch computed against a stale
	// cached copy would silently keep fields that it meant to clear.
	if err := r.Client.Status().Patch(ctx, mesh, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		if apierrors.IsConflict(err) {
			// Our cached copy is older than the object: the event for the
			// newer version is on its way (or queued) and reconciles again
			// from fresh state. Returning the error would only add a
			// rate-limited retry and an error log for a normal race.
			logf.FromContext(ctx).V(1).Info("Status write conflicted with a newer version; reconciling again from it")
			return nil
		}
		return fmt.Errorf("writing status: %w", err)
	}
	return nil
}

func podTemplateAnnotations(o client.Object) map[string]string {
	switch w := o.(type) {
	case *appsv1.Deployment:
		return w.Spec.Template.Annotations
	case *appsv1.StatefulSet:
		return w.Spec.Template.Annotations
	case *appsv1.DaemonSet:
		return w.Spec.Template.Annotations
	}
	return nil
}
