package controllers

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
)

// applyCounter records the objects the operator server-side applies.
type applyCounter struct {
	client.Client
	mu      sync.Mutex
	applied []string
}

func (c *applyCounter) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	// The operator applies unstructured configurations, which have the
	// object's accessors.
	if u, ok := obj.(interface {
		GetKind() string
		GetName() string
	}); ok {
		c.mu.Lock()
		c.applied = append(c.applied, u.GetKind()+"/"+u.GetName())
		c.mu.Unlock()
	}
	return c.Client.Apply(ctx, obj, opts...)
}

func (c *applyCounter) since(n int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.applied[n:])
}

func (c *applyCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.applied)
}

// TestReconcileAppliesOnlyWhatChanged: once installed, reconciles that
// change nothing send nothing; an object someone deleted or edited is
// applied again, and only that one.
func TestReconcileAppliesOnlyWhatChanged(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{}
	counter := &applyCounter{}
	op := &operator{clock: clock, client: func(c client.Client) client.Client { counter.Client = c; return counter }}
	op.start(t)
	t.Cleanup(op.stop)
	const ns = "weft-applies"
	createMesh(t, newMesh("applies", ns, "v1.0.0"))
	markAvailable(t, ns, "weft-controlplane-v1-0-0")
	waitCondition(t, "applies", meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonInstalled)
	if counter.count() == 0 {
		t.Fatal("the install applied nothing through the client")
	}

	// Reconciles with nothing new: no applies. The Service deletion after
	// them is reconciled last, so once it is back every poke was handled.
	start := counter.count()
	for i := 0; i < 3; i++ {
		poke(t, "applies")
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "weft-controlplane-v1-0-0"}}
	waitFor(t, "the pokes are reconciled", func() error {
		m := getMesh(t, "applies")
		if m.Annotations["test.weft.dev/poke"] == "" {
			return fmt.Errorf("no poke yet")
		}
		return nil
	})
	// Let the pokes' reconciles run; on a slow machine some may run later,
	// which only makes this check weaker, never wrong.
	time.Sleep(500 * time.Millisecond)
	if got := counter.since(start); len(got) != 0 {
		t.Errorf("reconciles that changed nothing applied %v", got)
	}
	start = counter.count()
	if err := env.Client.Delete(ctx, svc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the Service is applied again", func() error {
		return env.Client.Get(ctx, client.ObjectKeyFromObject(svc), &corev1.Service{})
	})
	// A reconcile that runs before the informer has seen the new Service
	// applies it once more; anything else is wrong.
	got := counter.since(start)
	if len(got) == 0 || slices.ContainsFunc(got, func(s string) bool { return s != "Service/weft-controlplane-v1-0-0" }) {
		t.Errorf("after deleting the Service the operator applied %v, want only the Service", got)
	}

	// An edit to a Deployment's spec by someone else is undone.
	start = counter.count()
	d := &unstructured.Unstructured{}
	d.SetAPIVersion("apps/v1")
	d.SetKind("Deployment")
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "weft-controlplane-v1-0-0"}, d); err != nil {
		t.Fatal(err)
	}
	want, _, _ := unstructured.NestedInt64(d.Object, "spec", "replicas")
	patch := client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"replicas":7}}`))
	if err := env.Client.Patch(ctx, d, patch); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the Deployment's replicas are restored", func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(d), d); err != nil {
			return err
		}
		if got, _, _ := unstructured.NestedInt64(d.Object, "spec", "replicas"); got != want {
			return fmt.Errorf("replicas = %d, want %d", got, want)
		}
		return nil
	})
	if got := counter.since(start); !slices.Contains(got, "Deployment/weft-controlplane-v1-0-0") {
		t.Errorf("after editing the Deployment the operator applied %v", got)
	}

	// Edits that move neither generation nor resourceVersion-tracked
	// fields are bounded in time: after reapplyEvery everything is sent
	// again.
	start = counter.count()
	clock.Advance(reapplyEvery + time.Minute)
	poke(t, "applies")
	waitFor(t, "everything is applied again after reapplyEvery", func() error {
		got := counter.since(start)
		for _, want := range []string{"ServiceAccount/weft-controlplane", "MutatingWebhookConfiguration/weft-proxy-injector", "ConfigMap/weft-trust-bundle"} {
			if !slices.Contains(got, want) {
				return fmt.Errorf("applied %v, not yet %s", got, want)
			}
		}
		return nil
	})
}
