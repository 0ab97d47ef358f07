package status

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
)

func svcParent(name string) gatewayv1.ParentReference {
	return gatewayv1.ParentReference{Group: ptr.To(gatewayv1.Group("")), Kind: ptr.To(gatewayv1.Kind("Service")), Name: gatewayv1.ObjectName(name)}
}

func parentStatus(controller string, ref gatewayv1.ParentReference, status metav1.ConditionStatus, reason string, ltt time.Time) gatewayv1.RouteParentStatus {
	return gatewayv1.RouteParentStatus{
		ParentRef:      ref,
		ControllerName: gatewayv1.GatewayController(controller),
		Conditions: []metav1.Condition{{
			Type: "Accepted", Status: status, Reason: reason, Message: reason, ObservedGeneration: 1,
			LastTransitionTime: metav1.NewTime(ltt),
		}},
	}
}

func TestMergeParents(t *testing.T) {
	old := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	gw := parentStatus("example.com/gateway", gatewayv1.ParentReference{Name: "edge"}, metav1.ConditionTrue, "Accepted", old)
	have := []gatewayv1.RouteParentStatus{
		parentStatus(meshv1alpha1.ControllerName, svcParent("gone"), metav1.ConditionTrue, "Accepted", old),
		gw,
		parentStatus(meshv1alpha1.ControllerName, svcParent("web"), metav1.ConditionTrue, "Accepted", old),
		parentStatus(meshv1alpha1.ControllerName, svcParent("api"), metav1.ConditionTrue, "Accepted", old),
	}
	want := []gatewayv1.RouteParentStatus{
		parentStatus(meshv1alpha1.ControllerName, svcParent("new"), metav1.ConditionTrue, "Accepted", time.Time{}),
		parentStatus(meshv1alpha1.ControllerName, svcParent("api"), metav1.ConditionFalse, "NoMatchingParent", time.Time{}),
		parentStatus(meshv1alpha1.ControllerName, svcParent("web"), metav1.ConditionTrue, "Accepted", time.Time{}),
	}
	want[2].Conditions[0].ObservedGeneration = 2
	got := mergeParents(have, want)

	var names []string
	for _, p := range got {
		names = append(names, string(p.ParentRef.Name))
	}
	if len(names) != 4 || names[0] != "edge" || names[1] != "web" || names[2] != "api" || names[3] != "new" {
		t.Fatalf("parents %v, want [edge web api new]: others keep their place, ours are updated in place, a stale one goes, a new one is appended", names)
	}
	if !got[0].Conditions[0].LastTransitionTime.Time.Equal(old) || got[0].ControllerName != "example.com/gateway" {
		t.Errorf("the Gateway controller's entry changed: %+v", got[0])
	}
	web := got[1].Conditions[0]
	if !web.LastTransitionTime.Time.Equal(old) || web.ObservedGeneration != 2 {
		t.Errorf("web: %+v, want the old lastTransitionTime (status unchanged) and observedGeneration 2", web)
	}
	api := got[2].Conditions[0]
	if api.LastTransitionTime.Time.Equal(old) || api.LastTransitionTime.IsZero() || api.Reason != "NoMatchingParent" {
		t.Errorf("api: %+v, want a new lastTransitionTime for the new status", api)
	}
	if got[3].Conditions[0].LastTransitionTime.IsZero() {
		t.Error("a new parent's condition has no lastTransitionTime")
	}
	if have[2].Conditions[0].ObservedGeneration != 1 {
		t.Error("mergeParents modified its input")
	}

	if got := mergeParents(nil, nil); got == nil {
		t.Error("mergeParents returned nil; status.parents is required, so it must be written as []")
	}
}

func TestWithCount(t *testing.T) {
	conds := []metav1.Condition{
		{Type: "Accepted", Status: metav1.ConditionTrue, Message: "Applied"},
		{Type: "ResolvedRefs", Status: metav1.ConditionTrue, Message: "ok"},
	}
	withCount(conds, 2, 5)
	if conds[0].Message != "Applied; applied by 2 of 5 proxies" || conds[1].Message != "ok" {
		t.Errorf("messages %q, %q", conds[0].Message, conds[1].Message)
	}
	rejected := []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionFalse, Message: "no such Service"}}
	withCount(rejected, 0, 0)
	if rejected[0].Message != "no such Service" {
		t.Errorf("a rejected route got a count: %q", rejected[0].Message)
	}
}

// TestFanoutReachesEveryOutput: bursts of signals never block the counter
// (all 150 sends complete though nobody reads for a while) and every
// reconciler's output gets events.
func TestFanoutReachesEveryOutput(t *testing.T) {
	in := make(chan struct{})
	f := newFanout(in)
	f.minInterval = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	for round := range 3 {
		for range 50 {
			in <- struct{}{}
		}
		for i, o := range f.out {
			select {
			case <-o:
			case <-time.After(30 * time.Second):
				t.Fatalf("round %d: output %d got nothing", round, i)
			}
		}
	}
	if !f.NeedLeaderElection() {
		t.Error("the fan-out runs on every replica; it must run on the leader only")
	}
}
