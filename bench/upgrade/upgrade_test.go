package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controllers"
	"github.com/weftmesh/weft/internal/testenv"
)

// These tests cover the bench's bookkeeping; the bench itself runs with
// `make bench-upgrade` (it needs the Kubernetes binaries and kwok).

func dep(name string, gen, observed int64, updated, available, unavailable int32, restartedAt, restartedFor string) *appsv1.Deployment {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Generation: gen},
		Spec:       appsv1.DeploymentSpec{Replicas: ptr.To[int32](1)},
		Status: appsv1.DeploymentStatus{ObservedGeneration: observed, Replicas: available + unavailable, UpdatedReplicas: updated,
			AvailableReplicas: available, UnavailableReplicas: unavailable},
	}
	if restartedAt != "" {
		d.Spec.Template.Annotations = map[string]string{controllers.AnnotationRestartedAt: restartedAt, controllers.AnnotationRestartedFor: restartedFor}
	}
	return d
}

func TestTrackerCountsAndBatches(t *testing.T) {
	tr := newTracker()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, n := range []string{"a", "b", "c"} {
		tr.update(dep(n, 1, 1, 1, 1, 0, "", ""), t0)
	}
	tr.reset("v1-1-0")
	b1 := t0.Add(time.Second).Format(time.RFC3339Nano)
	b2 := t0.Add(5 * time.Second).Format(time.RFC3339Nano)

	// Batch 1: a and b restarted; surge pods not yet available.
	tr.update(dep("a", 2, 1, 1, 1, 0, b1, "v1-1-0"), t0.Add(time.Second))
	tr.update(dep("b", 2, 1, 1, 1, 0, b1, "v1-1-0"), t0.Add(time.Second))
	tr.update(dep("a", 2, 2, 1, 1, 1, b1, "v1-1-0"), t0.Add(2*time.Second))
	s := tr.snapshot()
	if s.incomplete != 2 || s.unavailable != 1 || s.maxIncomplete != 2 {
		t.Fatalf("after batch 1 started: %+v", s)
	}
	tr.update(dep("a", 2, 2, 1, 1, 0, b1, "v1-1-0"), t0.Add(3*time.Second))
	tr.update(dep("b", 2, 2, 1, 1, 0, b1, "v1-1-0"), t0.Add(4*time.Second))
	// Batch 2: c, then c restarted a second time.
	tr.update(dep("c", 2, 1, 1, 1, 0, b2, "v1-1-0"), t0.Add(5*time.Second))
	tr.update(dep("c", 3, 2, 1, 1, 0, t0.Add(6*time.Second).Format(time.RFC3339Nano), "v1-1-0"), t0.Add(6*time.Second))
	tr.update(dep("c", 3, 3, 1, 1, 0, t0.Add(6*time.Second).Format(time.RFC3339Nano), "v1-1-0"), t0.Add(8*time.Second))

	s = tr.snapshot()
	if s.incomplete != 0 || s.unavailable != 0 || s.maxIncomplete != 2 || s.maxUnavailable != 1 {
		t.Errorf("counts: %+v", s)
	}
	if s.restartedForTarget != 3 || s.restartedTwice != 1 {
		t.Errorf("restarted %d, twice %d; want 3, 1", s.restartedForTarget, s.restartedTwice)
	}
	if len(s.batches) != 2 || s.batches[0].size != 2 || s.batches[0].end != t0.Add(4*time.Second) {
		t.Fatalf("batches: %+v", s.batches)
	}
	bt := summarizeBatches(s.batches)
	if bt.n != 2 || bt.overlaps != 0 || len(bt.durations) != 2 || bt.durations[0] != 3*time.Second || bt.gaps[0] != 2*time.Second {
		t.Errorf("summary: %+v", bt)
	}

	tr.remove("ns/a", t0.Add(9*time.Second))
	if s := tr.snapshot(); s.total != 2 {
		t.Errorf("after delete: %d tracked", s.total)
	}
}

func TestSummarizeBatchesOverlapAndUnfinished(t *testing.T) {
	t0 := time.Now()
	bt := summarizeBatches([]batchStat{
		{start: t0, end: t0.Add(4 * time.Second), size: 5, done: 5},
		{start: t0.Add(2 * time.Second), end: t0.Add(6 * time.Second), size: 5, done: 5},
		{start: t0.Add(7 * time.Second), size: 5, done: 3},
	})
	if bt.overlaps != 1 || bt.maxOverlap != 2*time.Second || bt.unfinished != 1 || len(bt.gaps) != 0 || bt.minSize != 5 || bt.sizeSum != 15 {
		t.Errorf("%+v", bt)
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP rest_client_requests_total Number of HTTP requests
# TYPE rest_client_requests_total counter
rest_client_requests_total{code="200",host="127.0.0.1:1",method="GET"} 12
rest_client_requests_total{code="200",host="127.0.0.1:1",method="PATCH"} 3
rest_client_requests_total{code="409",host="127.0.0.1:1",method="PATCH"} 1
controller_runtime_reconcile_time_seconds_sum{controller="meshcontrolplane"} 1.5e+00
weird{path="a\"b,c=d",x="y"} 2
process_open_fds 9
`
	ss := parseMetrics(strings.NewReader(text))
	by := sumBy(ss, "rest_client_requests_total", "method")
	if by["GET"] != 12 || by["PATCH"] != 4 {
		t.Errorf("by method: %v", by)
	}
	if got := sumBy(ss, "controller_runtime_reconcile_time_seconds_sum", "")[""]; got != 1.5 {
		t.Errorf("sum: %v", got)
	}
	if got := sumBy(ss, "weird", "x")["y"]; got != 2 {
		t.Errorf("escaped label value: %v (%+v)", got, ss)
	}
	if got := sumBy(ss, "process_open_fds", "")[""]; got != 9 {
		t.Errorf("no labels: %v", got)
	}
	if d := sub(map[string]float64{"a": 5, "b": 1}, map[string]float64{"a": 2, "b": 1}); len(d) != 1 || d["a"] != 3 {
		t.Errorf("sub: %v", d)
	}
}

func TestAdmissionBindsAndInjects(t *testing.T) {
	a := newAdmission([]string{"n0", "n1"})
	a.setRevision("v1-0-0")
	app := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{benchLabel: "true"}}}
	ops := a.mutate(app)
	raw, _ := json.Marshal(ops)
	for _, want := range []string{`"path":"/spec/nodeName","value":"n0"`, `"path":"/metadata/labels/mesh.weft.dev~1revision","value":"v1-0-0"`, `"path":"/spec/containers/-"`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("patch %s lacks %s", raw, want)
		}
	}
	// A control-plane pod is only bound, to the next node.
	ops = a.mutate(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "cp"}}})
	if len(ops) != 1 || ops[0].Value != "n1" {
		t.Errorf("control-plane pod: %+v", ops)
	}
	// An already bound pod is left alone.
	if ops := a.mutate(&corev1.Pod{Spec: corev1.PodSpec{NodeName: "x"}}); len(ops) != 0 {
		t.Errorf("bound pod: %+v", ops)
	}
	if by, bound := a.counts(); by["v1-0-0"] != 1 || bound != 2 {
		t.Errorf("counts %v %d", by, bound)
	}
}

func TestEffectiveBatch(t *testing.T) {
	m := &meshv1alpha1.MeshControlPlane{}
	if n, _ := effectiveBatch(m, 0, 1000); n != 5 {
		t.Errorf("defaults: %d", n)
	}
	if n, _ := effectiveBatch(m, 500, 1000); n != 250 {
		t.Errorf("batch 500, 25%%: %d", n)
	}
	m.Spec.Upgrade.MaxUnavailable = intstr.FromInt32(3)
	if n, _ := effectiveBatch(m, 50, 1000); n != 3 {
		t.Errorf("maxUnavailable 3: %d", n)
	}
}

func TestResultsKeepNotes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "RESULTS.md")
	if err := os.WriteFile(path, []byte("# old tables\n\n"+notesHeading+"\n\nWhat they mean.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res := &results{started: time.Now(), runs: []runResult{{from: "v1.0.0", to: "v1.1.0", workloads: 1, completed: true}}}
	if err := res.write(path); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), "old tables") || !strings.HasSuffix(string(b), "\n"+notesHeading+"\n\nWhat they mean.\n") || !strings.Contains(string(b), "| v1.0.0 → v1.1.0 |") {
		t.Errorf("results:\n%s", b)
	}
}

// TestSmoke runs the whole bench at a small scale. It starts an API server,
// kube-controller-manager, kwok and the operator, so it runs only when asked:
//
//	make kube-controller-manager kwok bin/manager
//	WEFT_BENCH_SMOKE=1 go test -run TestSmoke ./bench/upgrade
func TestSmoke(t *testing.T) {
	if os.Getenv("WEFT_BENCH_SMOKE") == "" {
		t.Skip("set WEFT_BENCH_SMOKE=1 to run the bench at a small scale (needs make kube-controller-manager kwok bin/manager)")
	}
	root := testenv.RepoRoot()
	kwok := filepath.Join(root, "bin", "kwok-"+*kwokVersion)
	manager := filepath.Join(root, "bin", "manager")
	assets, err := testenv.AssetsDir()
	if err != nil {
		t.Skip(err)
	}
	for _, bin := range []string{kwok, manager, filepath.Join(assets, "kube-controller-manager")} {
		if _, err := os.Stat(bin); err != nil {
			t.Skipf("%v: build it with make kube-controller-manager kwok bin/manager", err)
		}
	}
	dir := t.TempDir()
	*nDeployments, *nNamespaces, *nNodes = 20, 2, 2
	*batchSizes, *settle, *runTimeout = "0", time.Second, 5*time.Minute
	*out, *logDir, *kwokBin, *managerBin = filepath.Join(dir, "RESULTS.md"), dir, kwok, manager
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := run(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(*out)
	if err != nil {
		t.Fatal(err)
	}
	// The operator never had more workloads mid-rollout than its batch.
	if !strings.Contains(string(b), "| v1.0.0 → v1.1.0 | default → 5 | 25% (= 5 of 20) |") || !strings.Contains(string(b), "| yes |") {
		t.Errorf("results:\n%s", b)
	}
}
