package configserver

import (
	"crypto/sha256"
	"encoding/json"
	"slices"
	"sync"

	"github.com/weftmesh/weft/controlplane/compiler"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

// maxBases bounds the acknowledged snapshots remembered for reconnecting
// proxies. Entries of one namespace share their outline.
const maxBases = 16

// outline is what a delta against an outbound config needs of it: a hash
// of each service, not its bytes, so that remembering what every proxy
// holds costs little.
type outline struct {
	services map[string]sum128
	opaque   []uint16
}

// sum128 is a service's hash: half a SHA-256 is plenty to tell versions of
// one service apart, and a thousand services times the namespaces are kept.
type sum128 [16]byte

func sumOf(b []byte) sum128 {
	s := sha256.Sum256(b)
	return sum128(s[:16])
}

func newOutline(enc *compiler.EncodedOutbound) *outline {
	o := &outline{services: make(map[string]sum128, len(enc.Services)), opaque: enc.OpaquePorts}
	for _, s := range enc.Services {
		o.services[s.Key] = sumOf(s.JSON)
	}
	return o
}

// held is a snapshot a proxy was sent, as a base for deltas: its version,
// its view's fingerprint, the outline of its outbound part and the hash of
// its inbound part. It keeps no world and no encoded config alive.
type held struct {
	version string
	fp      [32]byte
	out     *outline
	inSum   [32]byte
	carried carried
	// delta says it was sent as a delta (a rejection is answered with the
	// full snapshot).
	delta bool
}

func heldOf(version string, v *view, delta bool) *held {
	return &held{version: version, fp: v.fp, out: v.out.outline, inSum: v.in.sum, carried: v.carried, delta: delta}
}

// deltaWire mirrors meshconfig.Delta with the services and the inbound part
// pre-encoded; a test decodes what it writes with meshconfig.DecodeDelta.
type deltaWire struct {
	Version         string              `json:"version"`
	BaseVersion     string              `json:"baseVersion"`
	Identity        string              `json:"identity,omitempty"`
	TrustDomain     string              `json:"trustDomain,omitempty"`
	MTLSMode        meshconfig.MTLSMode `json:"mtlsMode,omitempty"`
	Services        []json.RawMessage   `json:"services,omitempty"`
	RemovedServices []string            `json:"removedServices,omitempty"`
	OpaquePorts     *[]uint16           `json:"opaquePorts,omitempty"`
	Inbound         json.RawMessage     `json:"inbound,omitempty"`
}

// buildDelta encodes what turns base into v's snapshot of version version.
func buildDelta(base *held, v *view, version string) ([]byte, error) {
	w := v.world
	d := deltaWire{
		Version: version, BaseVersion: base.version,
		Identity: w.PodIdentity(v.pod), TrustDomain: w.Mesh.TrustDomain, MTLSMode: w.Mesh.MTLSMode,
	}
	now := v.out.outline
	if now != base.out {
		for _, s := range v.out.enc.Services {
			if sum, ok := base.out.services[s.Key]; !ok || sum != now.services[s.Key] {
				d.Services = append(d.Services, s.JSON)
			}
		}
		for k := range base.out.services {
			if _, ok := now.services[k]; !ok {
				d.RemovedServices = append(d.RemovedServices, k)
			}
		}
		slices.Sort(d.RemovedServices)
		if !slices.Equal(base.out.opaque, now.opaque) {
			ports := append([]uint16{}, now.opaque...)
			d.OpaquePorts = &ports
		}
	}
	if base.inSum != v.in.sum {
		d.Inbound = v.in.json
	}
	return json.Marshal(d)
}

// baseCache maps versions to what they hold, newest last, bounded.
type baseCache struct {
	mu    sync.Mutex
	max   int
	byVer map[string]*held
	order []string
}

func newBaseCache(n int) *baseCache {
	return &baseCache{max: n, byVer: map[string]*held{}}
}

func (c *baseCache) put(b *held) {
	if b == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byVer[b.version]; ok {
		return
	}
	c.byVer[b.version] = b
	c.order = append(c.order, b.version)
	for len(c.order) > c.max {
		delete(c.byVer, c.order[0])
		c.order = c.order[1:]
	}
}

func (c *baseCache) get(version string) *held {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byVer[version]
}

// versionCache remembers the version of recent view fingerprints.
type versionCache struct {
	mu   sync.Mutex
	byFP map[[32]byte]string
}

// maxVersions bounds versionCache; it is emptied when full (an entry is a
// few dozen bytes, and recomputing one costs a hash of the outbound config).
const maxVersions = 4096

// versionOf is the version of v's snapshot, computed without building it.
func (h *Hub) versionOf(v *view) string {
	c := &h.versions
	c.mu.Lock()
	ver, ok := c.byFP[v.fp]
	c.mu.Unlock()
	if ok {
		return ver
	}
	ver = v.world.SnapshotVersion(v.pod, v.out.enc, v.in.json)
	c.mu.Lock()
	if c.byFP == nil || len(c.byFP) >= maxVersions {
		c.byFP = map[[32]byte]string{}
	}
	c.byFP[v.fp] = ver
	c.mu.Unlock()
	return ver
}

func (b *held) generation(source string) (int64, bool) {
	if b == nil {
		return 0, false
	}
	return b.carried.generation(source)
}
