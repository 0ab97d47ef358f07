package sidecar

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"time"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/identity"
)

// LoadSnapshot reads and strictly decodes a snapshot file.
func LoadSnapshot(path string) (*meshconfig.Snapshot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return meshconfig.Decode(b)
}

// WatchSnapshot polls path every interval until ctx ends and applies each
// new valid snapshot. A bad file is logged and counted; the last good
// snapshot stays in use (fail closed, never half-applied).
func (p *Proxy) WatchSnapshot(ctx context.Context, path string, every time.Duration) {
	last := stamp(path)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := stamp(path)
		if s == last {
			continue
		}
		last = s
		snap, err := LoadSnapshot(path)
		if err == nil {
			err = p.Apply(snap)
		}
		p.metrics.Reload("snapshot", err)
		if err != nil {
			p.log.Error("Snapshot rejected, keeping the previous one", "path", path, "version", p.Snapshot().Version, "err", err)
		}
	}
}

// WatchIdentity polls the identity files; see identity.Source.Reload.
func (p *Proxy) WatchIdentity(ctx context.Context, src *identity.Source, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := src.Reload()
		if changed || err != nil {
			p.metrics.Reload("identity", err)
		}
		if err != nil {
			p.log.Error("Identity reload failed, keeping the previous one", "err", err)
		}
	}
}

// stamp identifies the file's content. Size and mtime are not enough: two
// writes of the same size within one timestamp tick of a coarse filesystem
// look identical, and the second would never be applied.
func stamp(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "missing"
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
