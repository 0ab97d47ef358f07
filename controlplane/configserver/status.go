package configserver

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
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
	return a.Connected == b.Connected && a.Stale == b.Stale && maps.Equal(a.ByVersion, b.ByVersion) &&
		maps.EqualFunc(a.Sources, b.Sources, SourceAcks.equal)
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

// MeshCounter answers "applied by N of M proxies" for the whole mesh: this
// replica's proxies from its hub, live, and every other replica's, of every
// revision, from the reports they publish in the weft-proxy-status-*
// ConfigMaps of Namespace (StatusWriter). The status writers run in one
// replica per revision, and the proxies are spread over all replicas and,
// during an upgrade, over two revisions: counting the local hub alone
// would report a fraction.
type MeshCounter struct {
	Hub *Hub
	// Reader lists the ConfigMaps of Namespace (the manager's cache).
	Reader    client.Reader
	Namespace string
	Revision  string
	Replica   string
	// MaxAge drops the report of a replica that stopped refreshing it
	// (90s when zero: three of StatusWriter's default refreshes).
	MaxAge time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	initOnce sync.Once
	changed  chan struct{}
	mu       sync.Mutex
	parsed   map[string]parsedStatus // ConfigMap name → its entries
}

type parsedStatus struct {
	resourceVersion string
	entries         map[string]statusEntry // key → entry
}

func (c *MeshCounter) init() {
	c.initOnce.Do(func() {
		c.changed = make(chan struct{}, 1)
		c.parsed = map[string]parsedStatus{}
	})
}

// Applied adds this replica's count to the fresh reports of the others.
func (c *MeshCounter) Applied(source string, gen int64) (applied, total int) {
	applied, total = c.Hub.Applied(source, gen)
	for _, e := range c.others(context.Background()) {
		if sa, ok := e.Sources[source]; ok {
			total += sa.Total
			applied += sa.applied(gen)
		}
	}
	return applied, total
}

// Changed fires when the hub's counts or another replica's report change.
func (c *MeshCounter) Changed() <-chan struct{} {
	c.init()
	return c.changed
}

func (c *MeshCounter) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// EventSource is where MeshCounter hears of ConfigMap changes: the
// manager's cache informer for ConfigMaps.
type EventSource interface {
	AddEventHandler(toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error)
}

// Run forwards the hub's changes and those of the status ConfigMaps from
// informer (nil: only the hub's) to Changed, until ctx ends.
func (c *MeshCounter) Run(ctx context.Context, informer EventSource) error {
	c.init()
	if informer != nil {
		onChange := func(obj any) {
			if cm, ok := obj.(*corev1.ConfigMap); ok && strings.HasPrefix(cm.Name, StatusConfigMapPrefix) {
				c.signal()
			}
		}
		if _, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    onChange,
			UpdateFunc: func(_, o any) { onChange(o) },
			DeleteFunc: func(o any) {
				if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
					o = d.Obj
				}
				onChange(o)
			},
		}); err != nil {
			return err
		}
	}
	hub := c.Hub.Changed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hub:
			c.signal()
		}
	}
}

// others returns the fresh reports of every replica but this one.
func (c *MeshCounter) others(ctx context.Context) []statusEntry {
	c.init()
	var list corev1.ConfigMapList
	if err := c.Reader.List(ctx, &list, client.InNamespace(c.Namespace)); err != nil {
		return nil
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	maxAge := c.MaxAge
	if maxAge <= 0 {
		maxAge = 90 * time.Second
	}
	own := StatusConfigMapPrefix + c.Revision
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []statusEntry
	seen := map[string]bool{}
	for i := range list.Items {
		cm := &list.Items[i]
		if !strings.HasPrefix(cm.Name, StatusConfigMapPrefix) {
			continue
		}
		seen[cm.Name] = true
		p, ok := c.parsed[cm.Name]
		if !ok || p.resourceVersion != cm.ResourceVersion {
			p = parsedStatus{resourceVersion: cm.ResourceVersion, entries: map[string]statusEntry{}}
			for key, raw := range cm.Data {
				var e statusEntry
				if json.Unmarshal([]byte(raw), &e) == nil {
					p.entries[key] = e
				}
			}
			c.parsed[cm.Name] = p
		}
		for key, e := range p.entries {
			if cm.Name == own && key == c.Replica+".json" {
				continue // this replica: the hub is fresher
			}
			updated, err := time.Parse(time.RFC3339, e.Updated)
			if err != nil || now().Sub(updated) > maxAge {
				continue
			}
			out = append(out, e)
		}
	}
	for name := range c.parsed {
		if !seen[name] {
			delete(c.parsed, name)
		}
	}
	return out
}
