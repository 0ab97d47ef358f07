package configserver

import (
	"sync"
	"time"

	"github.com/weftmesh/weft/controlplane/compiler"
	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
)

// snapCache shares built snapshots and deltas between proxies whose views
// are equal (the replicas of one Deployment: same identity, same ports,
// same namespace), so a change sent to a hundred replicas is built once. It
// is bounded in bytes and forgets the oldest entry first, and forgets
// entries unused for idle: they are only useful while one compilation's
// sends (or a burst of connections) are under way, and between bursts
// nothing should pin megabytes of snapshots.
type snapCache struct {
	mu       sync.Mutex
	maxBytes int
	idle     time.Duration
	bytes    int
	byKey    map[cacheKey]*cacheEntry
	order    []cacheKey
	sweeper  *time.Timer
}

// cacheKey is a view's fingerprint, and for a delta the fingerprint of the
// view it is made against (zero for a full snapshot). An encoded full
// response (encoded) is keyed by the hash of the trust bundle it carries
// too.
type cacheKey struct {
	base, fp [32]byte
	bundle   [32]byte
	encoded  bool
}

type cacheEntry struct {
	once sync.Once
	snap *compiler.Snapshot
	err  error
	size int
	used time.Time
}

// defaultCacheIdle is how long an unused entry is kept: the sends of one
// compilation, or of a burst of connections, follow each other closely.
const defaultCacheIdle = time.Second

func newSnapCache(maxBytes int) *snapCache {
	return &snapCache{maxBytes: maxBytes, idle: defaultCacheIdle, byKey: map[cacheKey]*cacheEntry{}}
}

// get returns v's full snapshot, building it at most once while it is
// cached; concurrent callers for the same view wait for one build.
func (c *snapCache) get(v *view) (*compiler.Snapshot, error) {
	return c.getOrBuild(cacheKey{fp: v.fp}, func() (*compiler.Snapshot, error) {
		return v.world.SnapshotFor(v.pod, v.out.enc)
	})
}

// encoded returns the wire encoding of the full response that sends v's
// snapshot with bundle (whose hash is sum), building it at most once while
// it is cached: every proxy with an equal view is sent the same bytes. The
// snapshot's JSON is not kept besides: the encoding holds it.
func (c *snapCache) encoded(v *view, bundle []byte, sum [32]byte) (*preEncoded, error) {
	s, err := c.getOrBuild(cacheKey{fp: v.fp, bundle: sum, encoded: true}, func() (*compiler.Snapshot, error) {
		snap, err := v.world.SnapshotFor(v.pod, v.out.enc)
		if err != nil {
			return nil, err
		}
		wire, err := encodeResponse(&meshapiv1.ConfigResponse{Version: snap.Version, Snapshot: snap.JSON, TrustBundle: bundle})
		return &compiler.Snapshot{Version: snap.Version, JSON: wire}, err
	})
	if err != nil {
		return nil, err
	}
	return decodeAliased(s.JSON)
}

// getOrBuild returns the entry of k, building it with build at most once
// while it is cached. Only Version and JSON of what build returns are used.
func (c *snapCache) getOrBuild(k cacheKey, build func() (*compiler.Snapshot, error)) (*compiler.Snapshot, error) {
	c.mu.Lock()
	e, ok := c.byKey[k]
	if !ok {
		e = &cacheEntry{}
		c.byKey[k] = e
		c.order = append(c.order, k)
	}
	e.used = time.Now()
	if c.sweeper == nil {
		c.sweeper = time.AfterFunc(c.idle, c.sweep)
	}
	c.mu.Unlock()
	e.once.Do(func() {
		e.snap, e.err = build()
		if e.err == nil {
			// Only the bytes sent are kept: the sources are the view's.
			e.snap = &compiler.Snapshot{Version: e.snap.Version, JSON: e.snap.JSON}
			e.size = len(e.snap.JSON)
		}
		c.mu.Lock()
		// Unless it was dropped meanwhile (a build slower than the idle
		// time, on a starved machine): then it is no longer counted.
		if c.byKey[k] == e {
			c.bytes += e.size
			c.evict()
		}
		c.mu.Unlock()
	})
	if e.err != nil {
		c.mu.Lock()
		if c.byKey[k] == e {
			delete(c.byKey, k)
		}
		c.mu.Unlock()
	}
	return e.snap, e.err
}

// sweep forgets the entries unused for c.idle, and comes back while any
// are left.
func (c *snapCache) sweep() {
	c.mu.Lock()
	defer c.mu.Unlock()
	cut := time.Now().Add(-c.idle)
	kept := c.order[:0]
	for _, k := range c.order {
		e, ok := c.byKey[k]
		if !ok {
			continue
		}
		if e.used.Before(cut) {
			c.bytes -= e.size
			delete(c.byKey, k)
			continue
		}
		kept = append(kept, k)
	}
	c.order = kept
	if len(c.order) == 0 {
		c.order = nil
		c.sweeper = nil
		return
	}
	c.sweeper.Reset(c.idle)
}

// evict drops the oldest entries until the cache fits, keeping the newest
// even when it alone is larger than the bound.
func (c *snapCache) evict() {
	for c.bytes > c.maxBytes && len(c.order) > 1 {
		k := c.order[0]
		c.order = c.order[1:]
		if e, ok := c.byKey[k]; ok {
			c.bytes -= e.size
			delete(c.byKey, k)
		}
	}
}
