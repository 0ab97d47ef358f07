package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/procstat"
	"github.com/weftmesh/weft/internal/testenv"
)

type results struct {
	started            time.Time
	loadStart, loadEnd string
	install, populate  time.Duration
	commit             string
	opStart            procStat
	runs               []runResult
}

type runResult struct {
	from, to              string
	batchSize             int
	effective             int
	maxUnavailableSetting string
	workloads             int
	started               time.Time
	total                 time.Duration
	completed             bool
	before, during, after procStat
	idleCPU               float64 // cores, over the settle time before
	samples               []procStat
	phases                []phaseEvent
	snap                  trackerSnapshot
	loadBefore, loadAfter string
	opRequests            map[string]float64
	reconciles            float64
	reconcileErrors       float64
	reconcileSeconds      float64
	apiByVerb             map[string]float64
	apiByResource         map[string]float64
	admitted              map[string]int
	notes                 []string
}

// batchTimes summarises the batches: how long each took (restart → last
// workload rolled out) and the gap from one batch's end to the next one's
// restart (the operator's reaction). overlaps counts batches restarted before
// the previous one was rolled out.
type batchTimes struct {
	n                         int
	durations, gaps           []time.Duration
	overlaps, unfinished      int
	maxOverlap                time.Duration
	firstStart, lastEnd       time.Time
	minSize, maxSize, sizeSum int
}

func summarizeBatches(bs []batchStat) batchTimes {
	var t batchTimes
	t.n = len(bs)
	for i, b := range bs {
		if i == 0 {
			t.firstStart = b.start
			t.minSize = b.size
		}
		t.minSize = min(t.minSize, b.size)
		t.maxSize = max(t.maxSize, b.size)
		t.sizeSum += b.size
		if b.end.IsZero() {
			t.unfinished++
			continue
		}
		t.durations = append(t.durations, b.end.Sub(b.start))
		if b.end.After(t.lastEnd) {
			t.lastEnd = b.end
		}
		if i > 0 && !bs[i-1].end.IsZero() {
			gap := b.start.Sub(bs[i-1].end)
			if gap < 0 {
				t.overlaps++
				t.maxOverlap = max(t.maxOverlap, -gap)
			} else {
				t.gaps = append(t.gaps, gap)
			}
		}
	}
	return t
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1)*p + 0.5)
	return s[i]
}

func mean(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t / time.Duration(len(ds))
}

func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d >= time.Minute:
		return fmt.Sprintf("%dm%04.1fs", int(d.Minutes()), (d % time.Minute).Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

func (r runResult) peakRSS() (peak float64) {
	for _, s := range r.samples {
		peak = max(peak, s.rssMiB)
	}
	return max(peak, r.during.rssMiB)
}

func (r runResult) meanRSS() float64 {
	if len(r.samples) == 0 {
		return 0
	}
	var t float64
	for _, s := range r.samples {
		t += s.rssMiB
	}
	return t / float64(len(r.samples))
}

// phaseTimes is when status.upgrade first showed each phase, from the bump.
func (r runResult) phaseTime(p meshv1alpha1.UpgradePhase) (time.Duration, bool) {
	for _, e := range r.phases {
		if e.phase == p {
			return e.at.Sub(r.started), true
		}
	}
	return 0, false
}

func (res *results) write(path string) error {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# Mesh upgrade benchmark\n\n")
	fmt.Fprintf(&b, "`make bench-upgrade` on %s, %s, %d CPUs (%s), %.0f GiB, shared with other work; `uptime` load average at the start %s",
		host, res.started.UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), procstat.CPUModel(), memTotalGiB(), res.loadStart)
	if res.loadEnd != "" {
		fmt.Fprintf(&b, ", at the end %s", res.loadEnd)
	}
	fmt.Fprintf(&b, ".\n\n")
	fmt.Fprintf(&b, "Setup: kube-apiserver + etcd (envtest binaries, v%s), kube-controller-manager (deployment, replicaset and garbage-collector controllers, --kube-api-qps=%d), "+
		"kwok %s playing the kubelet of %d fake nodes, and the operator as the real `%s` process (default flags, leader election off; checkout %s). "+
		"%d meshed Deployments (%d replica each, default RollingUpdate strategy) in %d namespaces labelled for injection. "+
		"The bench plays the scheduler and the injector at pod admission (see bench/upgrade/admission.go). "+
		"Mesh installed (Ready) in %s; the %d Deployments were available %s after their creation started.\n\n",
		testenv.KubernetesVersion, *kcmQPS, *kwokVersion, *nNodes, *managerBin, res.commit, *nDeployments, *nReplicas, *nNamespaces, dur(res.install), *nDeployments, dur(res.populate))

	fmt.Fprintf(&b, "## Headline\n\n")
	fmt.Fprintf(&b, "| upgrade | batch (setting → effective) | maxUnavailable | total time | batches | per batch p50 / p90 / max | most mid-rollout at once | most with unavailable replicas | ≤ setting? | restarted twice | operator CPU | operator RSS before / peak / after |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range res.runs {
		bt := summarizeBatches(r.snap.batches)
		total := dur(r.total)
		if !r.completed {
			total = "not complete after " + total
		}
		held := "yes"
		if r.snap.maxIncomplete > r.effective {
			held = fmt.Sprintf("**no** (%d > %d)", r.snap.maxIncomplete, r.effective)
		}
		fmt.Fprintf(&b, "| %s → %s | %s → %d | %s | %s | %d | %s / %s / %s | %d | %d | %s | %d | %.1f s | %.0f / %.0f / %.0f MiB |\n",
			r.from, r.to, orDefault(r.batchSize), r.effective, r.maxUnavailableSetting, total, bt.n,
			dur(pct(bt.durations, 0.5)), dur(pct(bt.durations, 0.9)), dur(pct(bt.durations, 1)),
			r.snap.maxIncomplete, r.snap.maxUnavailable, held, r.snap.restartedTwice,
			r.after.cpu-r.before.cpu, r.before.rssMiB, r.peakRSS(), r.after.rssMiB)
	}
	fmt.Fprintf(&b, "\n\"Mid-rollout\" is a Deployment whose rollout is not complete in the `kubectl rollout status` sense (new template not observed, not every replica updated, or not all available): what spec.upgrade.maxUnavailable bounds. "+
		"\"Unavailable replicas\" is status.unavailableReplicas > 0. Both are counted after every Deployment event of a watch on all of them. "+
		"\"≤ setting?\" compares the most mid-rollout at once with the effective batch (batchSize capped by maxUnavailable), which is what the operator promises.\n\n")

	for _, r := range res.runs {
		res.writeRun(&b, r)
	}
	// A hand-written reading of the numbers is kept across runs; it names
	// the run it was written for.
	if old, err := os.ReadFile(path); err == nil {
		if i := strings.Index(string(old), "\n"+notesHeading); i >= 0 {
			b.WriteString(string(old[i+1:]))
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

const notesHeading = "## Reading these numbers"

func (res *results) writeRun(b *strings.Builder, r runResult) {
	bt := summarizeBatches(r.snap.batches)
	fmt.Fprintf(b, "## %s → %s, batchSize %s\n\n", r.from, r.to, orDefault(r.batchSize))
	fmt.Fprintf(b, "Load average before %s, after %s.\n\n", r.loadBefore, r.loadAfter)
	fmt.Fprintf(b, "| measurement | value |\n|---|---|\n")
	total := dur(r.total)
	if !r.completed {
		total += " (**not complete**)"
	}
	fmt.Fprintf(b, "| spec.version bumped → status.upgrade Complete | %s |\n", total)
	if d, ok := r.phaseTime("RestartingWorkloads"); ok {
		fmt.Fprintf(b, "| → new revision available, first batch restarted (status) | %s |\n", dur(d))
	}
	if !bt.firstStart.IsZero() {
		fmt.Fprintf(b, "| → first batch restarted (restartedAt) | %s |\n", dur(bt.firstStart.Sub(r.started)))
	}
	if !bt.lastEnd.IsZero() && r.completed {
		fmt.Fprintf(b, "| last batch rolled out → Complete (old revision removed) | %s |\n", dur(r.started.Add(r.total).Sub(bt.lastEnd)))
	}
	fmt.Fprintf(b, "| workloads restarted / total | %d / %d |\n", r.snap.restartedForTarget, r.workloads)
	fmt.Fprintf(b, "| batches (sizes %d–%d) | %d |\n", bt.minSize, bt.maxSize, bt.n)
	fmt.Fprintf(b, "| batch duration (restart → last workload rolled out) mean / p50 / p90 / max | %s / %s / %s / %s |\n",
		dur(mean(bt.durations)), dur(pct(bt.durations, 0.5)), dur(pct(bt.durations, 0.9)), dur(pct(bt.durations, 1)))
	fmt.Fprintf(b, "| gap (batch rolled out → next batch restarted) mean / p50 / p90 / max | %s / %s / %s / %s |\n",
		dur(mean(bt.gaps)), dur(pct(bt.gaps, 0.5)), dur(pct(bt.gaps, 0.9)), dur(pct(bt.gaps, 1)))
	fmt.Fprintf(b, "| batches restarted before the previous one was seen rolled out (by the bench's watch) / by at most | %d / %s |\n", bt.overlaps, dur(bt.maxOverlap))
	if bt.unfinished > 0 {
		fmt.Fprintf(b, "| batches not rolled out at the end | %d |\n", bt.unfinished)
	}
	fmt.Fprintf(b, "| effective batch (batchSize %s, maxUnavailable %s) | %d |\n", orDefault(r.batchSize), r.maxUnavailableSetting, r.effective)
	fmt.Fprintf(b, "| most Deployments mid-rollout at once | %d |\n", r.snap.maxIncomplete)
	fmt.Fprintf(b, "| most Deployments with unavailable replicas at once | %d |\n", r.snap.maxUnavailable)
	fmt.Fprintf(b, "| most Deployments below their desired available replicas at once | %d |\n", r.snap.maxBelowDesired)
	fmt.Fprintf(b, "| Deployments restarted more than once | %d |\n", r.snap.restartedTwice)
	fmt.Fprintf(b, "| Deployment events watched | %d |\n", r.snap.events)
	fmt.Fprintf(b, "| operator CPU: idle before (cores) | %.3f |\n", r.idleCPU)
	upCPU := r.during.cpu - r.before.cpu
	fmt.Fprintf(b, "| operator CPU during the upgrade | %.1f s (%.2f cores on average) |\n", upCPU, upCPU/max(r.total.Seconds(), 1e-9))
	fmt.Fprintf(b, "| operator CPU per workload | %.1f ms |\n", upCPU*1000/float64(max(r.workloads, 1)))
	fmt.Fprintf(b, "| operator RSS before / mean during / peak / after | %.0f / %.0f / %.0f / %.0f MiB |\n", r.before.rssMiB, r.meanRSS(), r.peakRSS(), r.after.rssMiB)
	fmt.Fprintf(b, "| operator VmHWM (peak RSS since start) after | %.0f MiB |\n", r.after.hwmMiB)
	fmt.Fprintf(b, "| operator reconciles / errors / mean duration | %.0f / %.0f / %s |\n", r.reconciles, r.reconcileErrors,
		dur(time.Duration(r.reconcileSeconds/max(r.reconciles, 1)*float64(time.Second))))
	fmt.Fprintf(b, "| operator API requests (%s) | %s |\n", "by method", formatCounts(r.opRequests, 0))
	fmt.Fprintf(b, "| API server requests, all clients (by verb) | %s |\n", formatCounts(r.apiByVerb, 0))
	fmt.Fprintf(b, "| API server requests, all clients (top resources) | %s |\n", formatCounts(r.apiByResource, 8))
	var adm []string
	for k, v := range r.admitted {
		adm = append(adm, fmt.Sprintf("%s %d", k, v))
	}
	slices.Sort(adm)
	fmt.Fprintf(b, "| application pods admitted per revision (cumulative) | %s |\n", strings.Join(adm, ", "))
	for _, n := range r.notes {
		fmt.Fprintf(b, "\nNote: %s\n", n)
	}
	fmt.Fprintf(b, "\n")
}

func formatCounts(m map[string]float64, limit int) string {
	keys := sortedKeys(m)
	if limit > 0 && len(keys) > limit {
		keys = keys[:limit]
	}
	var parts []string
	for _, k := range keys {
		name := k
		if name == "" {
			name = "(none)"
		}
		parts = append(parts, fmt.Sprintf("%s %.0f", name, m[k]))
	}
	return fmt.Sprintf("%.0f: %s", total(m), strings.Join(parts, ", "))
}
