package controllers

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
)

// countingReader counts the operator's uncached reads: Lists of pod
// metadata (the uninjected count) and Gets of ConfigMaps (the proxy status,
// read on every reconcile that gets that far).
type countingReader struct {
	client.Reader
	mu        sync.Mutex
	podLists  int
	configMap int
}

func (c *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.ConfigMap); ok {
		c.mu.Lock()
		c.configMap++
		c.mu.Unlock()
	}
	return c.Reader.Get(ctx, key, obj, opts...)
}

func (c *countingReader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if l, ok := list.(*metav1.PartialObjectMetadataList); ok && l.Kind == "PodList" {
		c.mu.Lock()
		c.podLists++
		c.mu.Unlock()
	}
	return c.Reader.List(ctx, list, opts...)
}

func (c *countingReader) counts() (podLists, configMaps int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.podLists, c.configMap
}

// manualClock moves only when advanced, so that nothing in the test depends
// on how fast the machine runs it.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// startCountingOperator is startOperator with the API reader counted.
func startCountingOperator(t *testing.T, clock *manualClock) *countingReader {
	t.Helper()
	var reader *countingReader
	op := &operator{clock: clock, apiReader: func(r client.Reader) client.Reader {
		reader = &countingReader{Reader: r}
		return reader
	}}
	op.start(t)
	t.Cleanup(op.stop)
	return reader
}

// TestUninjectedCountDuringRollout: while a rollout runs, every event of a
// restarted workload reconciles; pods without a proxy, which cost one
// uncached List per injected namespace, are then counted at most once per
// resync interval, and status keeps the last count in between.
func TestUninjectedCountDuringRollout(t *testing.T) {
	ctx := context.Background()
	clock := &manualClock{now: time.Now()}
	reader := startCountingOperator(t, clock)
	const ns, apps = "weft-uninjected", "apps-uninjected"
	installed(t, "uninjected", ns, apps, 2, func(m *meshv1alpha1.MeshControlPlane) { m.Spec.Upgrade.BatchSize = 1 })
	setVersion(t, "uninjected", "v1.1.0", nil)
	markAvailable(t, ns, "weft-controlplane-v1-1-0")
	waitRestarted(t, apps, "app-0")
	waitUpgrade(t, "uninjected", func(u *meshv1alpha1.UpgradeStatus) error {
		if u.Phase != phaseRestarting {
			return fmt.Errorf("want RestartingWorkloads")
		}
		return nil
	})

	// A pod the injector missed appears mid-rollout.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: apps, Name: "missed"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}}},
	}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	// The operator's clock has not moved: reconciles do not list pods. (A
	// reconcile is seen through its proxy-status read; the Lists of the
	// reconciles before the last one seen are all counted.)
	lists, _ := reader.counts()
	for i := range 4 {
		_, cms := reader.counts()
		poke(t, "uninjected")
		waitFor(t, fmt.Sprintf("reconcile %d after the poke", i+1), func() error {
			if _, n := reader.counts(); n <= cms {
				return fmt.Errorf("no reconcile yet")
			}
			return nil
		})
	}
	if got, _ := reader.counts(); got != lists {
		t.Errorf("%d pod Lists during the rollout within one resync interval, want none", got-lists)
	}
	if n := getMesh(t, "uninjected").Status.Proxies.Uninjected; n != 0 {
		t.Errorf("uninjected = %d before the next count, want the last count (0)", n)
	}

	// A resync interval later the count is refreshed.
	clock.Advance(resyncInterval + time.Second)
	poke(t, "uninjected")
	waitFor(t, "status.proxies.uninjected counts the missed pod", func() error {
		if n := getMesh(t, "uninjected").Status.Proxies.Uninjected; n != 1 {
			return fmt.Errorf("uninjected = %d", n)
		}
		return nil
	})

	// Once the rollout is over, every reconcile counts again.
	rollOut(t, apps, "app-0", "v1-1-0")
	waitRestarted(t, apps, "app-0", "app-1")
	rollOut(t, apps, "app-1", "v1-1-0")
	waitCondition(t, "uninjected", meshv1alpha1.ConditionUpgradeInProgress, metav1.ConditionFalse, meshv1alpha1.ReasonUpgradeComplete)
	if err := env.Client.Delete(ctx, pod); err != nil {
		t.Fatal(err)
	}
	poke(t, "uninjected")
	waitFor(t, "status.proxies.uninjected drops to 0", func() error {
		if n := getMesh(t, "uninjected").Status.Proxies.Uninjected; n != 0 {
			return fmt.Errorf("uninjected = %d", n)
		}
		return nil
	})
}
