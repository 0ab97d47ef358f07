package controllers

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	// Operator logs only with WEFT_TEST_VERBOSE set: they drown test output.
	out := io.Discard
	if os.Getenv("WEFT_TEST_VERBOSE") != "" {
		out = os.Stderr
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(out)))
	os.Exit(testenv.Main(m, testenv.Options{CertManager: true}, func(e *testenv.Env) { env = e }))
}

// ctrlConfig lets each test start its own manager (an operator restart)
// with the same controller name in one process.
func ctrlConfig() config.Controller {
	return config.Controller{SkipNameValidation: ptr.To(true)}
}

// fakeClock is the operator's clock in tests: it runs with the wall clock,
// and moving it forward expires upgrade batches without waiting.
type fakeClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// operator is a running manager with the reconciler, as cmd/manager wires it.
type operator struct {
	clock interface{ Now() time.Time }
	// apiReader, if set, wraps the manager's uncached reader (a test that
	// counts the operator's uncached reads).
	apiReader func(client.Reader) client.Reader
	// client, if set, wraps the manager's client (a test that counts the
	// operator's writes).
	client func(client.Client) client.Client
	cancel context.CancelFunc
	done   chan struct{}
}

// startOperator runs the operator until the test ends (after the test's
// meshes are deleted, since cleanups run last-in first-out).
func startOperator(t *testing.T, clock *fakeClock) *operator {
	t.Helper()
	op := &operator{clock: clock}
	op.start(t)
	t.Cleanup(op.stop)
	return op
}

// restart stops the operator and starts a new one, as a rescheduled pod.
func (o *operator) restart(t *testing.T) {
	t.Helper()
	o.stop()
	o.start(t)
}

func (o *operator) start(t *testing.T) {
	t.Helper()
	clock := o.clock
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Client.Scheme(),
		Cache:                  CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             ctrlConfig(),
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &MeshControlPlaneReconciler{Now: clock.Now}
	if o.apiReader != nil {
		r.APIReader = o.apiReader(mgr.GetAPIReader())
	}
	if o.client != nil {
		r.Client = o.client(mgr.GetClient())
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	o.cancel, o.done = cancel, done
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
}

func (o *operator) stop() {
	o.cancel()
	<-o.done
}

// waitFor polls cond; the deadline only bounds a failure, it is not a
// performance assertion.
func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for {
		if last = cond(); last == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s: %v", what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func newMesh(name, namespace, version string) *meshv1alpha1.MeshControlPlane {
	return &meshv1alpha1.MeshControlPlane{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       meshv1alpha1.MeshControlPlaneSpec{Version: version, Namespace: namespace},
	}
}

// createMesh creates a MeshControlPlane and deletes it (waiting for the
// finalizer) when the test ends, so that the next test's mesh is alone.
func createMesh(t *testing.T, m *meshv1alpha1.MeshControlPlane) *meshv1alpha1.MeshControlPlane {
	t.Helper()
	ctx := context.Background()
	if err := env.Client.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Client.Delete(ctx, m)
		waitFor(t, "the MeshControlPlane is gone", func() error {
			err := env.Client.Get(ctx, client.ObjectKeyFromObject(m), &meshv1alpha1.MeshControlPlane{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still there (%v)", err)
		})
	})
	return m
}

func getMesh(t *testing.T, name string) *meshv1alpha1.MeshControlPlane {
	t.Helper()
	m := &meshv1alpha1.MeshControlPlane{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, m); err != nil {
		t.Fatal(err)
	}
	return m
}

// condition waits until the mesh's condition has the status and reason.
func waitCondition(t *testing.T, name, typ string, status metav1.ConditionStatus, reason string) *meshv1alpha1.MeshControlPlane {
	t.Helper()
	var m *meshv1alpha1.MeshControlPlane
	waitFor(t, fmt.Sprintf("%s is %s/%s", typ, status, reason), func() error {
		m = getMesh(t, name)
		c := meta.FindStatusCondition(m.Status.Conditions, typ)
		if c == nil {
			return fmt.Errorf("no %s condition", typ)
		}
		if c.Status != status || c.Reason != reason {
			return fmt.Errorf("%s is %s/%s: %s", typ, c.Status, c.Reason, c.Message)
		}
		if c.ObservedGeneration != m.Generation {
			return fmt.Errorf("%s observedGeneration %d, generation %d", typ, c.ObservedGeneration, m.Generation)
		}
		return nil
	})
	return m
}

// poke makes the operator reconcile now (after the test moved the clock).
func poke(t *testing.T, name string) {
	t.Helper()
	m := getMesh(t, name)
	patch := client.MergeFrom(m.DeepCopy())
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations["test.weft.dev/poke"] = time.Now().Format(time.RFC3339Nano)
	if err := env.Client.Patch(context.Background(), m, patch); err != nil {
		t.Fatal(err)
	}
}

// markAvailable plays the Deployment controller: the Deployment's current
// generation is rolled out and available.
func markAvailable(t *testing.T, ns, name string) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, "Deployment "+ns+"/"+name+" is marked available", func() error {
		d := &appsv1.Deployment{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
			return err
		}
		n := ptr.Deref(d.Spec.Replicas, 1)
		d.Status = appsv1.DeploymentStatus{
			ObservedGeneration: d.Generation,
			Replicas:           n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n,
			Conditions: []appsv1.DeploymentCondition{{
				Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable",
				LastUpdateTime: metav1.Now(), LastTransitionTime: metav1.Now(),
			}},
		}
		return env.Client.Status().Update(ctx, d)
	})
}

func createNamespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := env.Client.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}
