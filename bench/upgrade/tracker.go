package main

import (
	"slices"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/weftmesh/weft/controllers"
)

// tracker follows every bench Deployment through a watch (an informer) and
// counts, after each event, how many are not fully rolled out and how many
// report unavailable replicas. The maxima are exact for the sequence of
// states the watch delivers.
type tracker struct {
	mu     sync.Mutex
	target string // restartedFor of the run being recorded
	deps   map[string]*depState
	// Current counts.
	incomplete, unavailable, belowDesired int
	// Maxima since reset, and when they were first reached.
	maxIncomplete, maxUnavailable, maxBelowDesired int
	maxIncompleteAt                                time.Time
	events                                         int
}

type depState struct {
	restartedAt  string
	restartedFor string
	// restarts counts changes of restartedAt for the target revision seen
	// during the run: more than one means the operator restarted the
	// workload twice.
	restarts     int
	complete     bool
	unavailable  bool
	belowDesired bool
	// doneAt is when the Deployment was first seen complete after its
	// restart for the target revision.
	doneAt time.Time
}

func newTracker() *tracker { return &tracker{deps: map[string]*depState{}} }

// reset starts recording a run that moves workloads to revision target.
func (t *tracker) reset(target string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.target = target
	t.maxIncomplete, t.maxUnavailable, t.maxBelowDesired = t.incomplete, t.unavailable, t.belowDesired
	t.maxIncompleteAt = time.Now()
	t.events = 0
	for _, d := range t.deps {
		d.restarts = 0
		d.doneAt = time.Time{}
	}
}

// rolledOut is `kubectl rollout status` for a Deployment.
func rolledOut(d *appsv1.Deployment) bool {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas >= want && s.Replicas == s.UpdatedReplicas && s.AvailableReplicas >= want
}

func (t *tracker) update(d *appsv1.Deployment, at time.Time) {
	key := d.Namespace + "/" + d.Name
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	ann := d.Spec.Template.Annotations
	t.mu.Lock()
	defer t.mu.Unlock()
	t.events++
	s := t.deps[key]
	if s == nil {
		// A new entry starts complete and available; set counts it.
		s = &depState{complete: true}
		t.deps[key] = s
	}
	t.set(s, rolledOut(d), d.Status.UnavailableReplicas > 0, d.Status.AvailableReplicas < want)
	if ra := ann[controllers.AnnotationRestartedAt]; ra != s.restartedAt {
		s.restartedAt = ra
		s.restartedFor = ann[controllers.AnnotationRestartedFor]
		if t.target != "" && s.restartedFor == t.target {
			s.restarts++
			s.doneAt = time.Time{}
		}
	}
	if s.complete && s.doneAt.IsZero() && t.target != "" && s.restartedFor == t.target {
		s.doneAt = at
	}
	t.note(at)
}

func (t *tracker) remove(key string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.deps[key]
	if s == nil {
		return
	}
	t.set(s, true, false, false)
	delete(t.deps, key)
	t.note(at)
}

// set moves s to a new state and keeps the counts.
func (t *tracker) set(s *depState, complete, unavailable, below bool) {
	if s.complete && !complete {
		t.incomplete++
	} else if !s.complete && complete {
		t.incomplete--
	}
	if !s.unavailable && unavailable {
		t.unavailable++
	} else if s.unavailable && !unavailable {
		t.unavailable--
	}
	if !s.belowDesired && below {
		t.belowDesired++
	} else if s.belowDesired && !below {
		t.belowDesired--
	}
	s.complete, s.unavailable, s.belowDesired = complete, unavailable, below
}

func (t *tracker) note(at time.Time) {
	if t.incomplete > t.maxIncomplete {
		t.maxIncomplete, t.maxIncompleteAt = t.incomplete, at
	}
	t.maxUnavailable = max(t.maxUnavailable, t.unavailable)
	t.maxBelowDesired = max(t.maxBelowDesired, t.belowDesired)
}

type trackerSnapshot struct {
	total, complete                                int
	incomplete, unavailable, belowDesired          int
	maxIncomplete, maxUnavailable, maxBelowDesired int
	restartedForTarget, restartedTwice             int
	events                                         int
	batches                                        []batchStat
}

// batchStat is one batch: the Deployments restarted with one restartedAt.
// end is when the last of them was seen rolled out (zero while done < size).
type batchStat struct {
	start, end time.Time
	size, done int
}

func (t *tracker) snapshot() trackerSnapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := trackerSnapshot{
		total: len(t.deps), incomplete: t.incomplete, unavailable: t.unavailable, belowDesired: t.belowDesired,
		maxIncomplete: t.maxIncomplete, maxUnavailable: t.maxUnavailable, maxBelowDesired: t.maxBelowDesired, events: t.events,
	}
	groups := map[string]*batchStat{}
	for _, s := range t.deps {
		if s.complete {
			out.complete++
		}
		if t.target == "" || s.restartedFor != t.target {
			continue
		}
		out.restartedForTarget++
		if s.restarts > 1 {
			out.restartedTwice++
		}
		g := groups[s.restartedAt]
		if g == nil {
			start, _ := time.Parse(time.RFC3339Nano, s.restartedAt)
			g = &batchStat{start: start}
			groups[s.restartedAt] = g
		}
		g.size++
		if !s.doneAt.IsZero() {
			g.done++
			if s.doneAt.After(g.end) {
				g.end = s.doneAt
			}
		}
	}
	for _, g := range groups {
		if g.done < g.size {
			g.end = time.Time{}
		}
		out.batches = append(out.batches, *g)
	}
	slices.SortFunc(out.batches, func(a, b batchStat) int { return a.start.Compare(b.start) })
	return out
}
