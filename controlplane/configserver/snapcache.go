package configserver

import (
	"sync"

	"github.com/weftmesh/weft/controlplane/compiler"
)

// snapCache shares built snapshots and deltas between proxies whose views
// are equal (the replicas of one Deployment: same identity, same ports,
// same namespace), so a change sent to a hundred replicas is built once. It
// is bounded in bytes and forgets the oldest entry first: entries are only
// useful while one compilation's sends are under way.
type snapCache struct {
	mu       sync.Mutex
	maxBytes int
	bytes    int
	byKey    map[cacheKey]*cacheEntry
	order    []cacheKey
}

// cacheKey is a view's fingerprint, and for a delta the fingerprint of the
// view it is made against (zero for a full snapshot).
type cacheKey struct {
	base, fp [32]byte
}

type cacheEntry struct {
	once sync.Once
	snap *compiler.Snapshot
	err  error
	size int
}

func newSnapCache(maxBytes int) *snapCache {
	return &snapCache{maxBytes: maxBytes, byKey: map[cacheKey]*cacheEntry{}}
}

// get returns v's full snapshot, building it at most once while it is
// cached; concurrent callers for the same view wait for one build.
func (c *snapCache) get(v *view) (*compiler.Snapshot, error) {
	return c.getOrBuild(cacheKey{fp: v.fp}, func() (*compiler.Snapshot, error) {
		return v.world.SnapshotFor(v.pod, v.out.enc)
	})
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
	c.mu.Unlock()
	e.once.Do(func() {
		e.snap, e.err = build()
		if e.err == nil {
			// Only the bytes sent are kept: the sources are the view's.
			e.snap = &compiler.Snapshot{Version: e.snap.Version, JSON: e.snap.JSON}
			e.size = len(e.snap.JSON)
		}
		c.mu.Lock()
		c.bytes += e.size
		c.evict()
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
