package configserver

import (
	"sync"

	"github.com/weftmesh/weft/controlplane/compiler"
)

// snapCache shares built snapshots between proxies whose views are equal
// (the replicas of one Deployment: same identity, same ports, same
// namespace), so a change sent to a hundred replicas is built once. It is
// bounded in bytes and forgets the oldest entry first: entries are only
// useful while one compilation's sends are under way.
type snapCache struct {
	mu       sync.Mutex
	maxBytes int
	bytes    int
	byFP     map[[32]byte]*cacheEntry
	order    [][32]byte
}

type cacheEntry struct {
	once sync.Once
	snap *compiler.Snapshot
	err  error
	size int
}

func newSnapCache(maxBytes int) *snapCache {
	return &snapCache{maxBytes: maxBytes, byFP: map[[32]byte]*cacheEntry{}}
}

// get returns v's snapshot, building it at most once while it is cached;
// concurrent callers for the same view wait for one build.
func (c *snapCache) get(v *view) (*compiler.Snapshot, error) {
	c.mu.Lock()
	e, ok := c.byFP[v.fp]
	if !ok {
		e = &cacheEntry{}
		c.byFP[v.fp] = e
		c.order = append(c.order, v.fp)
	}
	c.mu.Unlock()
	e.once.Do(func() {
		e.snap, e.err = v.world.SnapshotFor(v.pod, v.out.enc)
		if e.err == nil {
			e.size = len(e.snap.JSON)
		}
		c.mu.Lock()
		c.bytes += e.size
		c.evict()
		c.mu.Unlock()
	})
	if e.err != nil {
		c.mu.Lock()
		if c.byFP[v.fp] == e {
			delete(c.byFP, v.fp)
		}
		c.mu.Unlock()
	}
	return e.snap, e.err
}

// evict drops the oldest entries until the cache fits, keeping the newest
// even when it alone is larger than the bound.
func (c *snapCache) evict() {
	for c.bytes > c.maxBytes && len(c.order) > 1 {
		fp := c.order[0]
		c.order = c.order[1:]
		if e, ok := c.byFP[fp]; ok {
			c.bytes -= e.size
			delete(c.byFP, fp)
		}
	}
}
