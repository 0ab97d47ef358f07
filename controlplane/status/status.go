// Package status writes the status of the objects that shape mesh traffic:
// HTTPRoute status.parents for Service parents (GAMMA), and the conditions and
// "applied by N of M proxies" counts of TrafficSplits and
// AuthorizationPolicies.
//
// The conditions are computed by controlplane/compiler (pure functions of a
// World); this package only reads the cluster, merges them with what is
// stored, and writes a status when, and only when, it differs. It runs only
// in the elected leader among control-plane replicas, never touches spec,
// and never touches HTTPRoute parents written by other controllers.
package status

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// AppliedCounter reports how far proxies have come in applying an object. The
// config server implements it: it knows which snapshot each connected proxy
// has acknowledged.
type AppliedCounter interface {
	// Applied says, of the connected proxies whose snapshot carries source
	// ("HTTPRoute ns/name", "TrafficSplit ns/name", "AuthorizationPolicy ns/name"),
	// how many have acknowledged a snapshot carrying generation >= gen.
	Applied(source string, gen int64) (applied, total int)
	// Changed is signalled when counts change, so status can be refreshed.
	Changed() <-chan struct{}
}

// Source names an object the way snapshots and AppliedCounter do.
func Source(kind string, o client.Object) string {
	return kind + " " + o.GetNamespace() + "/" + o.GetName()
}

// SetupWithManager registers the three status reconcilers and, when counter
// is not nil, refreshes every object's counts when it signals a change.
// Everything registered runs only in the elected leader.
func SetupWithManager(mgr ctrl.Manager, counter AppliedCounter) error {
	var fan *fanout
	if counter != nil {
		fan = newFanout(counter.Changed())
		if err := mgr.Add(fan); err != nil {
			return fmt.Errorf("adding the applied-count watcher: %w", err)
		}
	}
	c := mgr.GetClient()
	// Without Gateway API's CRDs a watch on HTTPRoutes would stop the
	// manager; the mesh still serves TrafficSplits and policies then.
	withRoutes := true
	if _, err := mgr.GetRESTMapper().RESTMapping(schema.GroupKind{Group: gatewayv1.GroupName, Kind: "HTTPRoute"}, gatewayv1.GroupVersion.Version); err != nil {
		if !meta.IsNoMatchError(err) {
			return fmt.Errorf("looking up the HTTPRoute API: %w", err)
		}
		withRoutes = false
		mgr.GetLogger().Info("Gateway API CRDs are not installed: HTTPRoute status is not written until the control plane restarts after they are")
	}
	routes := &RouteReconciler{Client: c, Counter: counter}
	splits := &SplitReconciler{Client: c, Counter: counter, withoutRoutes: !withRoutes}
	policies := &PolicyReconciler{Client: c, Counter: counter}
	var ch [3]<-chan event.GenericEvent
	if fan != nil {
		ch = [3]<-chan event.GenericEvent{fan.out[0], fan.out[1], fan.out[2]}
	}
	// Without routes nobody reads ch[0]; the fan-out never blocks on it.
	if withRoutes {
		if err := routes.SetupWithManager(mgr, ch[0]); err != nil {
			return err
		}
	}
	if err := splits.SetupWithManager(mgr, ch[1]); err != nil {
		return err
	}
	return policies.SetupWithManager(mgr, ch[2])
}

// controllerOptions: status writers are singletons across replicas; two
// leaders would fight over lastTransitionTime and counts.
func controllerOptions() controller.Options {
	return controller.Options{NeedLeaderElection: ptr.To(true), MaxConcurrentReconciles: 2}
}

// fanout turns the counter's one Changed channel into one event channel per
// reconciler. Each output holds at most one pending event, and outputs are
// sent at most once per minInterval: during a rollout proxies acknowledge
// continuously, and each event makes every object be reconciled. A signal
// that arrives in the quiet interval is delivered at its end, never lost.
type fanout struct {
	in          <-chan struct{}
	out         [3]chan event.GenericEvent
	minInterval time.Duration
}

func newFanout(in <-chan struct{}) *fanout {
	f := &fanout{in: in, minInterval: time.Second}
	for i := range f.out {
		f.out[i] = make(chan event.GenericEvent, 1)
	}
	return f
}

// NeedLeaderElection: counts only matter where status is written.
func (f *fanout) NeedLeaderElection() bool { return true }

// Start forwards signals until ctx ends or the counter closes its channel.
func (f *fanout) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("applied-counts")
	var quiet *time.Timer
	var quietC <-chan time.Time
	pending := false
	defer func() {
		if quiet != nil {
			quiet.Stop()
		}
	}()
	in := f.in
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-in:
			if !ok {
				log.Info("Applied-count channel closed; counts are refreshed only on object changes from now on")
				in = nil
				continue
			}
			if quietC != nil {
				pending = true
				continue
			}
			f.forward()
			quiet = time.NewTimer(f.minInterval)
			quietC = quiet.C
		case <-quietC:
			quietC = nil
			if pending {
				pending = false
				f.forward()
				quiet = time.NewTimer(f.minInterval)
				quietC = quiet.C
			}
		}
	}
}

func (f *fanout) forward() {
	for _, o := range f.out {
		select {
		case o <- event.GenericEvent{Object: &metav1.PartialObjectMetadata{}}:
		default:
		}
	}
}

// mergeConditions returns want, keeping the stored lastTransitionTime of
// each condition whose status did not change. Types we no longer report
// (PartiallyInvalid once a route is fixed) are dropped: every condition on
// these objects is ours to write.
func mergeConditions(have, want []metav1.Condition) []metav1.Condition {
	now := metav1.Now()
	out := make([]metav1.Condition, 0, len(want))
	for _, c := range want {
		c := *c.DeepCopy()
		if old := meta.FindStatusCondition(have, c.Type); old != nil && old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		} else {
			c.LastTransitionTime = now
		}
		out = append(out, c)
	}
	return out
}

// requeueOnConflict: a conflict means someone wrote the object since it was
// read (another controller's parents, a spec change); that is expected, so
// it is retried without being logged as an error.
func requeueOnConflict(ctx context.Context, err error, kind string, req ctrl.Request) (ctrl.Result, error) {
	if apierrors.IsConflict(err) {
		logf.FromContext(ctx).V(1).Info("Status write conflicted; retrying", "kind", kind, "object", req.NamespacedName)
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	return ctrl.Result{}, fmt.Errorf("writing status of %s %s: %w", kind, req.NamespacedName, err)
}

// appliedMessage is how the counts read in a condition message.
func appliedMessage(applied, total int) string {
	return fmt.Sprintf("applied by %d of %d proxies", applied, total)
}
