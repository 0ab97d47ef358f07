package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
)

// The test API server runs no controllers, so the tests play the Deployment
// and ReplicaSet controllers and the injector: a meshed workload is a
// Deployment, a ReplicaSet it controls and a Pod labelled with the revision
// that injected it.

func meshedDeployment(t *testing.T, ns, name, revision string) {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
			},
		},
	}
	if err := env.Client.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	runPod(t, d, revision)
	markAvailable(t, ns, name)
}

// runPod replaces the Deployment's pods with one of the given revision, as
// a rollout would.
func runPod(t *testing.T, d *appsv1.Deployment, revision string) {
	t.Helper()
	ctx := context.Background()
	if err := env.Client.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(d.Namespace), client.MatchingLabels{"app": d.Name}); err != nil {
		t.Fatal(err)
	}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: d.Name + "-" + revision, Labels: d.Spec.Template.Labels,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))}},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](1), Selector: d.Spec.Selector, Template: d.Spec.Template},
	}
	if err := env.Client.Create(ctx, rs); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(rs), rs); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: d.Name + "-" + revision + "-pod",
			Labels:          map[string]string{"app": d.Name, meshv1alpha1.LabelRevision: revision},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(rs, appsv1.SchemeGroupVersion.WithKind("ReplicaSet"))}},
		Spec: d.Spec.Template.Spec,
	}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

// rollOut plays the Deployment controller after a restart: new pods on the
// new revision, then the rollout complete.
func rollOut(t *testing.T, ns, name, revision string) {
	t.Helper()
	d := &appsv1.Deployment{}
	get(t, ns, name, d)
	runPod(t, d, revision)
	markAvailable(t, ns, name)
}

func restartedWorkloads(t *testing.T, ns string) []string {
	t.Helper()
	var list appsv1.DeploymentList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range list.Items {
		if d.Spec.Template.Annotations[AnnotationRestartedAt] != "" {
			out = append(out, d.Name)
		}
	}
	slices.Sort(out)
	return out
}

func waitRestarted(t *testing.T, ns string, want ...string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("exactly %v are restarted", want), func() error {
		if got := restartedWorkloads(t, ns); !slices.Equal(got, want) {
			return fmt.Errorf("restarted: %v", got)
		}
		return nil
	})
}

func waitUpgrade(t *testing.T, name string, cond func(*meshv1alpha1.UpgradeStatus) error) *meshv1alpha1.MeshControlPlane {
	t.Helper()
	var m *meshv1alpha1.MeshControlPlane
	waitFor(t, "status.upgrade", func() error {
		m = getMesh(t, name)
		if m.Status.Upgrade == nil {
			return fmt.Errorf("no status.upgrade")
		}
		if err := cond(m.Status.Upgrade); err != nil {
			return fmt.Errorf("%w (status.upgrade %+v)", err, *m.Status.Upgrade)
		}
		return nil
	})
	return m
}

func setVersion(t *testing.T, name, version string, mutate func(*meshv1alpha1.MeshControlPlane)) {
	t.Helper()
	m := getMesh(t, name)
	patch := client.MergeFrom(m.DeepCopy())
	m.Spec.Version = version
	if mutate != nil {
		mutate(m)
	}
	if err := env.Client.Patch(context.Background(), m, patch); err != nil {
		t.Fatal(err)
	}
}

func webhookRevision(t *testing.T) string {
	t.Helper()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	get(t, "", WebhookConfigName, mwc)
	return mwc.Webhooks[0].ClientConfig.Service.Name
}

// installed creates a mesh at v1.0.0 whose control plane is available, and
// an injected namespace with meshed Deployments on its revision.
func installed(t *testing.T, name, ns, appNS string, workloads int, spec func(*meshv1alpha1.MeshControlPlane)) {
	t.Helper()
	m := newMesh(name, ns, "v1.0.0")
	// Each test selects only its own application namespace.
	m.Spec.Injection.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"weft-test": appNS}}
	if spec != nil {
		spec(m)
	}
	createMesh(t, m)
	markAvailable(t, ns, "weft-controlplane-v1-0-0")
	waitCondition(t, name, meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonInstalled)
	createNamespace(t, appNS, map[string]string{"weft-test": appNS})
	// Other tests' meshes use the same revision names: leave no pod behind.
	t.Cleanup(func() {
		_ = env.Client.DeleteAllOf(context.Background(), &corev1.Pod{}, client.InNamespace(appNS))
	})
	for i := range workloads {
		meshedDeployment(t, appNS, fmt.Sprintf("app-%d", i), "v1-0-0")
	}
}

// TestUpgrade bumps spec.version with five meshed Deployments and a batch
// size of two, and follows every step a user would watch in status.
func TestUpgrade(t *testing.T) {
	ctx := context.Background()
	startOperator(t, &fakeClock{})
	const ns, apps = "weft-upgrade", "apps-upgrade"
	installed(t, "upgrade", ns, apps, 5, func(m *meshv1alpha1.MeshControlPlane) { m.Spec.Upgrade.BatchSize = 2 })

	setVersion(t, "upgrade", "v1.1.0", nil)
	// The new revision starts beside the old one; injection stays on the
	// old one until the new one is available; nothing is restarted.
	waitUpgrade(t, "upgrade", func(u *meshv1alpha1.UpgradeStatus) error {
		if u.Phase != phaseStarting || u.From != "v1.0.0" || u.To != "v1.1.0" || u.StartTime == nil {
			return fmt.Errorf("want StartingRevision from v1.0.0 to v1.1.0")
		}
		return nil
	})
	get(t, ns, "weft-controlplane-v1-1-0", &appsv1.Deployment{})
	waitCondition(t, "upgrade", meshv1alpha1.ConditionUpgradeInProgress, metav1.ConditionTrue, meshv1alpha1.ReasonRevisionStarting)
	if got := webhookRevision(t); got != "weft-controlplane-v1-0-0" {
		t.Errorf("the webhook moved to %s before the new revision was available", got)
	}
	if got := restartedWorkloads(t, apps); len(got) != 0 {
		t.Errorf("workloads restarted before the new revision was available: %v", got)
	}

	markAvailable(t, ns, "weft-controlplane-v1-1-0")
	waitFor(t, "the webhook points at the new revision", func() error {
		if got := webhookRevision(t); got != "weft-controlplane-v1-1-0" {
			return fmt.Errorf("webhook → %s", got)
		}
		return nil
	})

	// Batches of two, in order, each waiting for the previous one.
	batches := [][]string{{"app-0", "app-1"}, {"app-0", "app-1", "app-2", "app-3"}, {"app-0", "app-1", "app-2", "app-3", "app-4"}}
	for i, want := range batches {
		waitRestarted(t, apps, want...)
		waitUpgrade(t, "upgrade", func(u *meshv1alpha1.UpgradeStatus) error {
			if u.Phase != phaseRestarting || u.Batch != int32(i+1) || u.WorkloadsTotal != 5 {
				return fmt.Errorf("want batch %d RestartingWorkloads of 5", i+1)
			}
			return nil
		})
		waitCondition(t, "upgrade", meshv1alpha1.ConditionUpgradeInProgress, metav1.ConditionTrue, meshv1alpha1.ReasonRestartingWorkloads)
		// The batch is not ready yet: the next one must not start. The
		// status written after the restart says it is waiting.
		waitFor(t, "status says the batch is awaited", func() error {
			c := getMesh(t, "upgrade")
			cond := findCondition(c, meshv1alpha1.ConditionUpgradeInProgress)
			if cond == nil || !contains(cond.Message, "waiting for") {
				return fmt.Errorf("condition: %+v", cond)
			}
			return nil
		})
		if got := restartedWorkloads(t, apps); !slices.Equal(got, want) {
			t.Fatalf("batch %d: %v restarted while the batch was not ready, want %v", i+1, got, want)
		}
		for _, name := range want[2*i:] {
			rollOut(t, apps, name, "v1-1-0")
		}
	}

	// Every workload moved: the old revision goes away and status settles.
	waitFor(t, "the old revision is removed", func() error {
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "weft-controlplane-v1-0-0"}, &appsv1.Deployment{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "weft-controlplane-v1-0-0"}, &corev1.Service{}); !apierrors.IsNotFound(err) {
		t.Errorf("the old revision's Service is still there: %v", err)
	}
	m := waitCondition(t, "upgrade", meshv1alpha1.ConditionUpgradeInProgress, metav1.ConditionFalse, meshv1alpha1.ReasonUpgradeComplete)
	waitCondition(t, "upgrade", meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonInstalled)
	m = waitCondition(t, "upgrade", meshv1alpha1.ConditionProgressing, metav1.ConditionFalse, meshv1alpha1.ReasonAsExpected)
	if u := m.Status.Upgrade; u == nil || u.Phase != phaseComplete || u.WorkloadsUpdated != 5 || u.Batch != 3 {
		t.Errorf("status.upgrade = %+v", u)
	}
	if m.Status.Version.Current != "v1.1.0" || len(m.Status.Revisions) != 1 || m.Status.Revisions[0].Name != "v1-1-0" {
		t.Errorf("status.version %+v, revisions %+v", m.Status.Version, m.Status.Revisions)
	}
}

// TestUpgradeBatchFailure: a batch that never becomes ready pauses the
// rollout with Degraded naming the workload; fixing it resumes the rollout;
// an operator restarted in the middle resumes without restarting anything
// twice.
func TestUpgradeBatchFailure(t *testing.T) {
	clock := &fakeClock{}
	op := startOperator(t, clock)
	const ns, apps = "weft-failure", "apps-failure"
	installed(t, "failure", ns, apps, 3, func(m *meshv1alpha1.MeshControlPlane) {
		m.Spec.Upgrade.BatchSize = 1
		m.Spec.Upgrade.BatchTimeout = metav1.Duration{Duration: time.Minute}
	})
	setVersion(t, "failure", "v1.1.0", nil)
	markAvailable(t, ns, "weft-controlplane-v1-1-0")
	waitRestarted(t, apps, "app-0")
	first := restartedAt(deployment(t, apps, "app-0"))

	// app-0 never becomes ready; the batch deadline passes.
	clock.Advance(2 * time.Minute)
	poke(t, "failure")
	m := waitCondition(t, "failure", meshv1alpha1.ConditionDegraded, metav1.ConditionTrue, meshv1alpha1.ReasonBatchFailed)
	if c := findCondition(m, meshv1alpha1.ConditionDegraded); !contains(c.Message, "Deployment/"+apps+"/app-0") {
		t.Errorf("Degraded does not name the workload: %q", c.Message)
	}
	waitCondition(t, "failure", meshv1alpha1.ConditionUpgradeInProgress, metav1.ConditionTrue, meshv1alpha1.ReasonBatchFailed)
	m = waitUpgrade(t, "failure", func(u *meshv1alpha1.UpgradeStatus) error {
		if u.Phase != phasePaused || u.FailedWorkload != "Deployment/"+apps+"/app-0" {
			return fmt.Errorf("want Paused on app-0")
		}
		return nil
	})
	if got := restartedWorkloads(t, apps); !slices.Equal(got, []string{"app-0"}) {
		t.Fatalf("the rollout went on past a failed batch: %v", got)
	}

	// The operator restarts mid-upgrade.
	op.restart(t)
	poke(t, "failure")
	waitCondition(t, "failure", meshv1alpha1.ConditionDegraded, metav1.ConditionTrue, meshv1alpha1.ReasonBatchFailed)

	// Fixing the workload resumes the rollout with the next batch.
	rollOut(t, apps, "app-0", "v1-1-0")
	waitRestarted(t, apps, "app-0", "app-1")
	waitCondition(t, "failure", meshv1alpha1.ConditionDegraded, metav1.ConditionFalse, meshv1alpha1.ReasonAsExpected)

	// Another restart: nothing is restarted twice, the rollout carries on.
	op.restart(t)
	rollOut(t, apps, "app-1", "v1-1-0")
	waitRestarted(t, apps, "app-0", "app-1", "app-2")
	if got := restartedAt(deployment(t, apps, "app-0")); !got.Equal(first) {
		t.Errorf("app-0 was restarted again (%s, first %s)", got, first)
	}
	waitUpgrade(t, "failure", func(u *meshv1alpha1.UpgradeStatus) error {
		if u.Batch != 3 || u.WorkloadsUpdated != 2 {
			return fmt.Errorf("want batch 3 with 2 updated")
		}
		return nil
	})

	// Pausing holds the next batch; the current one still finishes.
	setVersion(t, "failure", "v1.1.0", func(m *meshv1alpha1.MeshControlPlane) { m.Spec.Upgrade.Paused = true })
	rollOut(t, apps, "app-2", "v1-1-0")
	// With every workload restarted, pausing no longer holds anything back.
	waitCondition(t, "failure", meshv1alpha1.ConditionUpgradeInProgress, metav1.ConditionFalse, meshv1alpha1.ReasonUpgradeComplete)
}

// TestUpgradePaused: spec.upgrade.paused stops the rollout between batches
// and unpausing resumes it.
func TestUpgradePaused(t *testing.T) {
	startOperator(t, &fakeClock{})
	const ns, apps = "weft-paused", "apps-paused"
	installed(t, "paused", ns, apps, 2, func(m *meshv1alpha1.MeshControlPlane) { m.Spec.Upgrade.BatchSize = 1 })
	setVersion(t, "paused", "v1.1.0", nil)
	markAvailable(t, ns, "weft-controlplane-v1-1-0")
	waitRestarted(t, apps, "app-0")
	setVersion(t, "paused", "v1.1.0", func(m *meshv1alpha1.MeshControlPlane) { m.Spec.Upgrade.Paused = true })
	rollOut(t, apps, "app-0", "v1-1-0")
	waitCondition(t, "paused", meshv1alpha1.ConditionUpgradeInProgress, metav1.ConditionTrue, meshv1alpha1.ReasonUpgradePaused)
	if got := restartedWorkloads(t, apps); !slices.Equal(got, []string{"app-0"}) {
		t.Fatalf("a paused rollout restarted %v", got)
	}
	setVersion(t, "paused", "v1.1.0", func(m *meshv1alpha1.MeshControlPlane) { m.Spec.Upgrade.Paused = false })
	waitRestarted(t, apps, "app-0", "app-1")
}

func deployment(t *testing.T, ns, name string) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	get(t, ns, name, d)
	return d
}

func findCondition(m *meshv1alpha1.MeshControlPlane, typ string) *metav1.Condition {
	for i := range m.Status.Conditions {
		if m.Status.Conditions[i].Type == typ {
			return &m.Status.Conditions[i]
		}
	}
	return nil
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestRollback: changing spec.version back in the middle of an upgrade rolls
// the workloads already moved back to the old revision, then removes the
// revision that was being rolled out.
func TestRollback(t *testing.T) {
	ctx := context.Background()
	startOperator(t, &fakeClock{})
	const ns, apps = "weft-rollback", "apps-rollback"
	installed(t, "rollback", ns, apps, 2, func(m *meshv1alpha1.MeshControlPlane) { m.Spec.Upgrade.BatchSize = 1 })
	setVersion(t, "rollback", "v1.1.0", nil)
	markAvailable(t, ns, "weft-controlplane-v1-1-0")
	waitRestarted(t, apps, "app-0")
	rollOut(t, apps, "app-0", "v1-1-0")
	waitRestarted(t, apps, "app-0", "app-1")
	first := restartedAt(deployment(t, apps, "app-0"))

	// app-1 is being restarted when the user rolls back.
	setVersion(t, "rollback", "v1.0.0", nil)
	waitUpgrade(t, "rollback", func(u *meshv1alpha1.UpgradeStatus) error {
		if u.From != "v1.1.0" || u.To != "v1.0.0" {
			return fmt.Errorf("want a rollout from v1.1.0 to v1.0.0")
		}
		return nil
	})
	waitFor(t, "the webhook points back at the old revision", func() error {
		if got := webhookRevision(t); got != "weft-controlplane-v1-0-0" {
			return fmt.Errorf("webhook → %s", got)
		}
		return nil
	})
	// Both workloads now run v1-1-0 pods once app-1's restart completes.
	rollOut(t, apps, "app-1", "v1-1-0")
	waitFor(t, "app-0 is restarted again for the rollback", func() error {
		if got := restartedAt(deployment(t, apps, "app-0")); !got.After(first) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	rollOut(t, apps, "app-0", "v1-0-0")
	waitFor(t, "app-1 is restarted for the rollback", func() error {
		d := deployment(t, apps, "app-1")
		if !rolloutComplete(d) {
			return nil
		}
		return fmt.Errorf("app-1 not restarted yet")
	})
	rollOut(t, apps, "app-1", "v1-0-0")
	waitCondition(t, "rollback", meshv1alpha1.ConditionUpgradeInProgress, metav1.ConditionFalse, meshv1alpha1.ReasonUpgradeComplete)
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "weft-controlplane-v1-1-0"}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("the abandoned revision is still there: %v", err)
	}
	m := waitCondition(t, "rollback", meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonInstalled)
	if m.Status.Version.Current != "v1.0.0" {
		t.Errorf("status.version = %+v", m.Status.Version)
	}
}

// fakeRollouts plays the Deployment controller for a namespace until stop is
// called: every restarted Deployment whose rollout is not complete gets new
// pods on revision and becomes available, except those in broken. It also
// records the most Deployments caught mid-rollout at once.
type fakeRollouts struct {
	mu          sync.Mutex
	broken      map[string]bool
	maxInFlight int
	errs        []error
	stop        func()
}

func startFakeRollouts(t *testing.T, ns, revision string, broken ...string) *fakeRollouts {
	ctx, cancel := context.WithCancel(context.Background())
	f := &fakeRollouts{broken: map[string]bool{}}
	for _, b := range broken {
		f.broken[b] = true
	}
	done := make(chan struct{})
	f.stop = func() { cancel(); <-done }
	t.Cleanup(f.stop)
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := f.tick(ctx, ns, revision); err != nil && ctx.Err() == nil {
				f.mu.Lock()
				f.errs = append(f.errs, err)
				f.mu.Unlock()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return f
}

func (f *fakeRollouts) fix(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.broken, name)
}

func (f *fakeRollouts) tick(ctx context.Context, ns, revision string) error {
	var list appsv1.DeploymentList
	if err := env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return err
	}
	var pending []*appsv1.Deployment
	for i := range list.Items {
		d := &list.Items[i]
		if d.Spec.Template.Annotations[AnnotationRestartedAt] != "" && !rolloutComplete(d) {
			pending = append(pending, d)
		}
	}
	f.mu.Lock()
	f.maxInFlight = max(f.maxInFlight, len(pending))
	f.mu.Unlock()
	for _, d := range pending {
		f.mu.Lock()
		broken := f.broken[d.Name]
		f.mu.Unlock()
		if broken {
			continue
		}
		if err := env.Client.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns), client.MatchingLabels{"app": d.Name}); err != nil {
			return err
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: d.Name + "-" + revision + "-pod",
				Labels: map[string]string{"app": d.Name, meshv1alpha1.LabelRevision: revision}},
			Spec: d.Spec.Template.Spec,
		}
		if err := env.Client.Create(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1,
			Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "Test", LastUpdateTime: metav1.Now(), LastTransitionTime: metav1.Now()}}}
		if err := env.Client.Status().Update(ctx, d); err != nil && !apierrors.IsConflict(err) {
			return err
		}
	}
	return nil
}

// TestUpgradeFifty upgrades 50 meshed Deployments with batches of 10; one
// Deployment in the third batch never becomes ready, which pauses the
// rollout with Degraded; fixing it lets the rollout complete. Never more
// Deployments than the batch are mid-rollout at once.
func TestUpgradeFifty(t *testing.T) {
	clock := &fakeClock{}
	startOperator(t, clock)
	const ns, apps = "weft-fifty", "apps-fifty"
	installed(t, "fifty", ns, apps, 50, func(m *meshv1alpha1.MeshControlPlane) {
		m.Spec.Upgrade.BatchSize = 10
		m.Spec.Upgrade.MaxUnavailable = intstr.FromString("20%")
		m.Spec.Upgrade.BatchTimeout = metav1.Duration{Duration: time.Minute}
	})
	// Workloads sort by name: app-0, app-1, app-10..app-19, ... so app-27 is
	// in the third batch.
	f := startFakeRollouts(t, apps, "v1-1-0", "app-27")
	setVersion(t, "fifty", "v1.1.0", nil)
	markAvailable(t, ns, "weft-controlplane-v1-1-0")

	waitUpgrade(t, "fifty", func(u *meshv1alpha1.UpgradeStatus) error {
		if u.Batch != 3 || u.WorkloadsUpdated != 29 {
			return fmt.Errorf("want batch 3 with all but app-27 updated")
		}
		return nil
	})
	clock.Advance(2 * time.Minute)
	poke(t, "fifty")
	m := waitCondition(t, "fifty", meshv1alpha1.ConditionDegraded, metav1.ConditionTrue, meshv1alpha1.ReasonBatchFailed)
	if m.Status.Upgrade.FailedWorkload != "Deployment/"+apps+"/app-27" {
		t.Errorf("failedWorkload = %q", m.Status.Upgrade.FailedWorkload)
	}
	if got := len(restartedWorkloads(t, apps)); got != 30 {
		t.Errorf("%d workloads restarted while the third batch failed, want 30", got)
	}

	f.fix("app-27")
	waitCondition(t, "fifty", meshv1alpha1.ConditionUpgradeInProgress, metav1.ConditionFalse, meshv1alpha1.ReasonUpgradeComplete)
	m = waitCondition(t, "fifty", meshv1alpha1.ConditionDegraded, metav1.ConditionFalse, meshv1alpha1.ReasonAsExpected)
	if u := m.Status.Upgrade; u.WorkloadsUpdated != 50 || u.Batch != 5 {
		t.Errorf("status.upgrade = %+v", *u)
	}
	f.stop()
	if len(f.errs) > 0 {
		t.Errorf("fake rollouts: %v", f.errs)
	}
	if f.maxInFlight > 10 {
		t.Errorf("%d Deployments were mid-rollout at once, more than maxUnavailable (10)", f.maxInFlight)
	}
}

// TestUpgradeStatefulSetAndDaemonSet: the rollout finds StatefulSets and
// DaemonSets through their pods and waits for their own notion of a
// complete rollout.
func TestUpgradeStatefulSetAndDaemonSet(t *testing.T) {
	ctx := context.Background()
	startOperator(t, &fakeClock{})
	const ns, apps = "weft-kinds", "apps-kinds"
	installed(t, "kinds", ns, apps, 0, func(m *meshv1alpha1.MeshControlPlane) { m.Spec.Upgrade.MaxUnavailable = intstr.FromString("100%") })
	labels := map[string]string{"app": "kinds"}
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: apps, Name: "db"},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: apps, Name: "agent"},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}
	for _, obj := range []client.Object{sts, ds} {
		if err := env.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
		kind := "StatefulSet"
		if _, ok := obj.(*appsv1.DaemonSet); ok {
			kind = "DaemonSet"
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: apps, Name: obj.GetName() + "-0",
				Labels:          map[string]string{meshv1alpha1.LabelRevision: "v1-0-0"},
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(obj, appsv1.SchemeGroupVersion.WithKind(kind))}},
			Spec: tmpl.Spec,
		}
		if err := env.Client.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	setVersion(t, "kinds", "v1.1.0", nil)
	markAvailable(t, ns, "weft-controlplane-v1-1-0")
	waitFor(t, "both are restarted in one batch", func() error {
		get(t, apps, "db", sts)
		get(t, apps, "agent", ds)
		if sts.Spec.Template.Annotations[AnnotationRestartedAt] == "" || ds.Spec.Template.Annotations[AnnotationRestartedAt] == "" {
			return fmt.Errorf("not restarted yet")
		}
		return nil
	})
	waitUpgrade(t, "kinds", func(u *meshv1alpha1.UpgradeStatus) error {
		if u.WorkloadsTotal != 2 || u.WorkloadsUpdated != 0 {
			return fmt.Errorf("want 2 workloads, none updated")
		}
		return nil
	})
	// Their controllers finish the rollouts.
	if err := env.Client.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(apps)); err != nil {
		t.Fatal(err)
	}
	sts.Status = appsv1.StatefulSetStatus{ObservedGeneration: sts.Generation, Replicas: 1, ReadyReplicas: 1, UpdatedReplicas: 1, CurrentRevision: "r2", UpdateRevision: "r2", AvailableReplicas: 1}
	if err := env.Client.Status().Update(ctx, sts); err != nil {
		t.Fatal(err)
	}
	ds.Status = appsv1.DaemonSetStatus{ObservedGeneration: ds.Generation, DesiredNumberScheduled: 3, CurrentNumberScheduled: 3, UpdatedNumberScheduled: 3, NumberAvailable: 3, NumberReady: 3}
	if err := env.Client.Status().Update(ctx, ds); err != nil {
		t.Fatal(err)
	}
	m := waitCondition(t, "kinds", meshv1alpha1.ConditionUpgradeInProgress, metav1.ConditionFalse, meshv1alpha1.ReasonUpgradeComplete)
	if m.Status.Upgrade.WorkloadsUpdated != 2 {
		t.Errorf("status.upgrade = %+v", *m.Status.Upgrade)
	}
}

// TestUpgradeManual: with strategy Manual the operator moves injection to the
// new revision and restarts nothing; the old revision goes once the user has
// restarted every meshed workload.
func TestUpgradeManual(t *testing.T) {
	ctx := context.Background()
	startOperator(t, &fakeClock{})
	const ns, apps = "weft-manual", "apps-manual"
	installed(t, "manual", ns, apps, 1, func(m *meshv1alpha1.MeshControlPlane) { m.Spec.Upgrade.Strategy = meshv1alpha1.UpgradeManual })
	setVersion(t, "manual", "v1.1.0", nil)
	markAvailable(t, ns, "weft-controlplane-v1-1-0")
	m := waitCondition(t, "manual", meshv1alpha1.ConditionUpgradeInProgress, metav1.ConditionTrue, meshv1alpha1.ReasonRestartingWorkloads)
	if c := findCondition(m, meshv1alpha1.ConditionUpgradeInProgress); !contains(c.Message, "manual upgrade: 1 workloads") {
		t.Errorf("condition message = %q", c.Message)
	}
	if got := restartedWorkloads(t, apps); len(got) != 0 {
		t.Errorf("a manual upgrade restarted %v", got)
	}
	if got := webhookRevision(t); got != "weft-controlplane-v1-1-0" {
		t.Errorf("webhook → %s", got)
	}
	rollOut(t, apps, "app-0", "v1-1-0")
	waitCondition(t, "manual", meshv1alpha1.ConditionUpgradeInProgress, metav1.ConditionFalse, meshv1alpha1.ReasonUpgradeComplete)
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "weft-controlplane-v1-0-0"}, &appsv1.Deployment{}); !apierrors.IsNotFound(err) {
		t.Errorf("the old revision is still there: %v", err)
	}
}
