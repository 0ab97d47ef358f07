package controllers

import (
	"errors"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/images"
)

func readyObservation() *observation {
	img, _ := images.For("v1.0.0", "")
	return &observation{
		desired:   img,
		revisions: []revisionObservation{{Name: "v1-0-0", Version: "v1.0.0", Available: true}},
		active:    "v1-0-0",
		certs:     certObservation{Ready: true},
		proxies:   proxyReport{ByVersion: map[string]int32{}},

		proxiesObserved: true,
	}
}

// TestComputeStatus pins the conditions a person sees for each situation.
func TestComputeStatus(t *testing.T) {
	type want struct{ ready, progressing, degraded, upgrade string }
	tests := []struct {
		name   string
		mutate func(*observation)
		want   want
	}{
		{"installed", func(*observation) {}, want{
			"True/" + meshv1alpha1.ReasonInstalled, "False/" + meshv1alpha1.ReasonAsExpected, "False/" + meshv1alpha1.ReasonAsExpected, "False/" + meshv1alpha1.ReasonNoUpgrade}},
		{"control plane starting", func(o *observation) { o.revisions[0].Available = false }, want{
			"False/" + meshv1alpha1.ReasonControlPlaneNotReady, "True/" + meshv1alpha1.ReasonInstalling, "False/" + meshv1alpha1.ReasonAsExpected, "False/" + meshv1alpha1.ReasonNoUpgrade}},
		{"issuer missing", func(o *observation) { o.certs = certObservation{Message: "waiting for cert-manager"} }, want{
			"False/" + meshv1alpha1.ReasonIssuerNotReady, "True/" + meshv1alpha1.ReasonInstalling, "True/" + meshv1alpha1.ReasonIssuerNotReady, "False/" + meshv1alpha1.ReasonNoUpgrade}},
		{"unknown version", func(o *observation) { o.versionErr = errors.New("unknown") }, want{
			"False/" + meshv1alpha1.ReasonUnknownVersion, "False/" + meshv1alpha1.ReasonUnknownVersion, "True/" + meshv1alpha1.ReasonUnknownVersion, ""}},
		{"conflict", func(o *observation) { o.conflictWith = "other" }, want{
			"False/" + meshv1alpha1.ReasonConflict, "False/" + meshv1alpha1.ReasonConflict, "True/" + meshv1alpha1.ReasonConflict, "False/" + meshv1alpha1.ReasonNoUpgrade}},
		{"batch failed", func(o *observation) {
			o.upgrade = &meshv1alpha1.UpgradeStatus{From: "v1.0.0", To: "v1.1.0", Phase: phasePaused, FailedWorkload: "Deployment/a/b"}
			o.batchFailed = true
		}, want{
			"True/" + meshv1alpha1.ReasonInstalled, "False/" + meshv1alpha1.ReasonBatchFailed, "True/" + meshv1alpha1.ReasonBatchFailed, "True/" + meshv1alpha1.ReasonBatchFailed}},
		{"issuer expiring", func(o *observation) { o.certs.Expiring = "renewal is failing" }, want{
			"True/" + meshv1alpha1.ReasonInstalled, "False/" + meshv1alpha1.ReasonAsExpected, "True/" + meshv1alpha1.ReasonCertificateExpiring, "False/" + meshv1alpha1.ReasonNoUpgrade}},
		{"paused", func(o *observation) {
			o.upgrade = &meshv1alpha1.UpgradeStatus{From: "v1.0.0", To: "v1.1.0", Phase: phasePaused}
		}, want{
			"True/" + meshv1alpha1.ReasonInstalled, "False/" + meshv1alpha1.ReasonUpgradePaused, "False/" + meshv1alpha1.ReasonAsExpected, "True/" + meshv1alpha1.ReasonUpgradePaused}},
		{"restarting", func(o *observation) {
			o.upgrade = &meshv1alpha1.UpgradeStatus{From: "v1.0.0", To: "v1.1.0", Phase: phaseRestarting}
		}, want{
			"True/" + meshv1alpha1.ReasonInstalled, "True/" + meshv1alpha1.ReasonRestartingWorkloads, "False/" + meshv1alpha1.ReasonAsExpected, "True/" + meshv1alpha1.ReasonRestartingWorkloads}},
		{"complete", func(o *observation) {
			o.upgrade = &meshv1alpha1.UpgradeStatus{From: "v1.0.0", To: "v1.1.0", Phase: phaseComplete}
		}, want{
			"True/" + meshv1alpha1.ReasonInstalled, "False/" + meshv1alpha1.ReasonAsExpected, "False/" + meshv1alpha1.ReasonAsExpected, "False/" + meshv1alpha1.ReasonUpgradeComplete}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMesh("m", "", "v1.0.0")
			m.Generation = 3
			obs := readyObservation()
			tt.mutate(obs)
			st := computeStatus(m, obs, time.Now())
			got := func(typ string) string {
				c := meta.FindStatusCondition(st.Conditions, typ)
				if c == nil {
					return ""
				}
				if c.ObservedGeneration != 3 {
					t.Errorf("%s observedGeneration = %d", typ, c.ObservedGeneration)
				}
				return string(c.Status) + "/" + c.Reason
			}
			g := want{got(meshv1alpha1.ConditionReady), got(meshv1alpha1.ConditionProgressing), got(meshv1alpha1.ConditionDegraded), got(meshv1alpha1.ConditionUpgradeInProgress)}
			if g != tt.want {
				t.Errorf("conditions = %+v\nwant        %+v", g, tt.want)
			}
		})
	}
}

// TestConditionTransitionTimeKept: an unchanged condition keeps its
// lastTransitionTime, so a status write does not claim a change.
func TestConditionTransitionTimeKept(t *testing.T) {
	m := newMesh("m", "", "v1.0.0")
	t0 := time.Now().Add(-time.Hour)
	m.Status = computeStatus(m, readyObservation(), t0)
	st := computeStatus(m, readyObservation(), time.Now())
	if c := meta.FindStatusCondition(st.Conditions, meshv1alpha1.ConditionReady); !c.LastTransitionTime.Time.Equal(metav1.NewTime(t0).Time) {
		t.Errorf("lastTransitionTime moved to %v", c.LastTransitionTime)
	}
	if !equalStatus(m.Status, st) {
		t.Error("recomputing an unchanged status gives a different status")
	}
}

func TestSumProxyStatus(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	data := map[string]string{
		"a.json":      `{"connected":3,"stale":1,"byVersion":{"v1.0.0":3},"updated":"2026-01-01T11:59:00Z"}`,
		"b.json":      `{"connected":2,"stale":0,"byVersion":{"v1.0.0":1,"v1.1.0":1},"updated":"2026-01-01T12:00:00Z"}`,
		"old.json":    `{"connected":9,"stale":9,"byVersion":{"v1.0.0":9},"updated":"2026-01-01T11:57:59Z"}`,
		"bad.json":    `{"connected":`,
		"neg.json":    `{"connected":-1,"updated":"2026-01-01T12:00:00Z"}`,
		"nodate.json": `{"connected":1}`,
		"other":       `ignored`,
	}
	got, errs := sumProxyStatus(data, now)
	if got.Connected != 5 || got.Stale != 1 || got.ByVersion["v1.0.0"] != 4 || got.ByVersion["v1.1.0"] != 1 || len(got.ByVersion) != 2 {
		t.Errorf("sum = %+v", got)
	}
	if len(errs) != 3 {
		t.Errorf("errors = %v, want 3 (bad, neg, nodate)", errs)
	}
}

func FuzzSumProxyStatus(f *testing.F) {
	f.Add(`{"connected":3,"stale":1,"byVersion":{"v1.0.0":3},"updated":"2026-01-01T11:59:00Z"}`)
	f.Add(`{"connected":-5}`)
	f.Fuzz(func(t *testing.T, raw string) {
		got, _ := sumProxyStatus(map[string]string{"x.json": raw}, time.Now())
		if got.Connected < 0 || got.Stale < 0 {
			t.Errorf("negative counts from %q: %+v", raw, got)
		}
	})
}

func TestBatchSize(t *testing.T) {
	for _, tt := range []struct {
		batch int32
		maxU  intstr.IntOrString
		total int
		want  int
	}{
		{2, intstr.FromString("25%"), 5, 2},
		{5, intstr.FromString("25%"), 8, 2},
		{5, intstr.FromInt32(1), 100, 1},
		{5, intstr.IntOrString{}, 100, 5},
		{0, intstr.FromString("100%"), 3, 3},
		{10, intstr.FromString("10%"), 1, 1},
	} {
		m := newMesh("m", "", "v1.0.0")
		m.Spec.Upgrade.BatchSize, m.Spec.Upgrade.MaxUnavailable = tt.batch, tt.maxU
		if got := batchSize(m, tt.total); got != tt.want {
			t.Errorf("batchSize(batch %d, maxUnavailable %s, %d workloads) = %d, want %d", tt.batch, tt.maxU.String(), tt.total, got, tt.want)
		}
	}
}
