package configserver

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// StatusConfigMapPrefix + revision names the ConfigMap where every replica
// reports its proxies for the operator.
const StatusConfigMapPrefix = "weft-proxy-status-"

// StatusWriter publishes this replica's Report under key
// "<replica>.json" of ConfigMap weft-proxy-status-<revision>. Each replica
// writes only its own key (a merge patch), so replicas never conflict; the
// periodic refresh lets the operator drop the keys of replicas that died.
type StatusWriter struct {
	Client    client.Client
	Hub       *Hub
	Namespace string
	Revision  string
	Replica   string
	Log       logr.Logger
	// Interval is the least time between two writes (2s when zero).
	Interval time.Duration
	// Refresh rewrites an unchanged report this often (30s when zero).
	Refresh time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

type statusEntry struct {
	Report
	Updated string `json:"updated"`
}

// Start writes until ctx ends. It is a manager.Runnable that every replica
// runs (not leader-elected: each reports its own proxies).
func (w *StatusWriter) Start(ctx context.Context) error {
	interval, refresh := w.Interval, w.Refresh
	if interval <= 0 {
		interval = 2 * time.Second
	}
	if refresh <= 0 {
		refresh = 30 * time.Second
	}
	now := w.Now
	if now == nil {
		now = time.Now
	}
	var last *Report
	var lastWrite time.Time
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		r := w.Hub.Report()
		if last == nil || !sameReport(*last, r) || now().Sub(lastWrite) >= refresh {
			if err := w.write(ctx, r, now()); err != nil {
				w.Log.Error(err, "Writing the proxy status failed; retrying", "configMap", w.Namespace+"/"+w.name())
			} else {
				last, lastWrite = &r, now()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func sameReport(a, b Report) bool {
	return a.Connected == b.Connected && a.Stale == b.Stale && maps.Equal(a.ByVersion, b.ByVersion)
}

func (w *StatusWriter) name() string { return StatusConfigMapPrefix + w.Revision }

func (w *StatusWriter) write(ctx context.Context, r Report, now time.Time) error {
	entry, err := json.Marshal(statusEntry{Report: r, Updated: now.UTC().Format(time.RFC3339)})
	if err != nil {
		return err
	}
	key := w.Replica + ".json"
	patch, err := json.Marshal(map[string]any{"data": map[string]string{key: string(entry)}})
	if err != nil {
		return err
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: w.Namespace, Name: w.name()}}
	err = w.Client.Patch(ctx, cm, client.RawPatch(types.MergePatchType, patch))
	if !apierrors.IsNotFound(err) {
		return err
	}
	cm.Labels = map[string]string{"app.kubernetes.io/part-of": "weft", "mesh.weft.dev/revision": w.Revision}
	cm.Data = map[string]string{key: string(entry)}
	err = w.Client.Create(ctx, cm)
	if apierrors.IsAlreadyExists(err) {
		// Another replica created it in between: our key still needs writing.
		return w.Client.Patch(ctx, &corev1.ConfigMap{ObjectMeta: cm.ObjectMeta}, client.RawPatch(types.MergePatchType, patch))
	}
	if err != nil {
		return fmt.Errorf("creating ConfigMap %s/%s: %w", w.Namespace, w.name(), err)
	}
	return nil
}
