package meshconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Delta is a change to a snapshot the proxy holds, so that a change to one
// route does not resend the whole mesh. Applied to the snapshot of version
// BaseVersion it gives the snapshot of version Version, exactly as if that
// had been sent whole: outbound services are replaced or added by key
// (Service.Key), removed by key, and the outbound opaque ports and the
// inbound part are replaced when present.
type Delta struct {
	// Version of the snapshot the delta produces.
	Version string `json:"version"`
	// BaseVersion is the snapshot it applies to.
	BaseVersion string `json:"baseVersion"`
	// Identity, TrustDomain and MTLSMode replace the base's (they are small
	// and always sent).
	Identity    string   `json:"identity,omitempty"`
	TrustDomain string   `json:"trustDomain,omitempty"`
	MTLSMode    MTLSMode `json:"mtlsMode,omitempty"`
	// Services replace the base's service of the same key, or are added.
	Services []Service `json:"services,omitempty"`
	// RemovedServices are the keys of base services that are gone.
	RemovedServices []string `json:"removedServices,omitempty"`
	// OpaquePorts, when present, replace the base's (an empty list clears
	// them).
	OpaquePorts *[]uint16 `json:"opaquePorts,omitempty"`
	// Inbound, when present, replaces the base's.
	Inbound *Inbound `json:"inbound,omitempty"`
}

// Key identifies a Service within Outbound.Services: "namespace/name".
// Services are listed in ascending key order.
func (s *Service) Key() string { return ServiceKey(s.Namespace, s.Name) }

// ServiceKey is the Key of the Service namespace/name.
func ServiceKey(namespace, name string) string { return namespace + "/" + name }

// DecodeDelta reads one delta as strictly as Decode reads a snapshot. It
// does not validate: Apply validates the snapshot it produces.
func DecodeDelta(data []byte) (*Delta, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var d Delta
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("decoding delta: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decoding delta: trailing data after the JSON object")
	}
	return &d, nil
}

// EncodeDelta writes a delta as JSON.
func EncodeDelta(d *Delta) ([]byte, error) {
	return json.Marshal(d)
}

// Apply returns the snapshot d makes of base, validated as Decode validates
// a full snapshot. base is not modified; the result shares its unchanged
// parts (snapshots are immutable). It fails when base is not the snapshot
// d was made against, when d removes a service base does not have or names
// a service twice, and when the result is invalid.
func (d *Delta) Apply(base *Snapshot) (*Snapshot, error) {
	if base == nil {
		return nil, fmt.Errorf("delta to version %q applies to version %q, but no snapshot is held", d.Version, d.BaseVersion)
	}
	if d.BaseVersion == "" || base.Version != d.BaseVersion {
		return nil, fmt.Errorf("delta to version %q applies to version %q, but version %q is held", d.Version, d.BaseVersion, base.Version)
	}
	removed := make(map[string]bool, len(d.RemovedServices))
	for _, k := range d.RemovedServices {
		if removed[k] {
			return nil, fmt.Errorf("delta removes service %s twice", k)
		}
		removed[k] = true
	}
	changed := make(map[string]int, len(d.Services))
	for i := range d.Services {
		k := d.Services[i].Key()
		if _, dup := changed[k]; dup || removed[k] {
			return nil, fmt.Errorf("delta names service %s twice", k)
		}
		changed[k] = i
	}

	s := &Snapshot{
		Version:     d.Version,
		Identity:    d.Identity,
		TrustDomain: d.TrustDomain,
		MTLSMode:    d.MTLSMode,
		Outbound:    Outbound{OpaquePorts: base.Outbound.OpaquePorts},
		Inbound:     base.Inbound,
	}
	if d.OpaquePorts != nil {
		s.Outbound.OpaquePorts = nil
		if len(*d.OpaquePorts) > 0 {
			s.Outbound.OpaquePorts = *d.OpaquePorts
		}
	}
	if d.Inbound != nil {
		s.Inbound = *d.Inbound
	}

	// Replace in place, then merge the additions in by key so that the
	// order is the one a full snapshot has.
	kept := make([]Service, 0, len(base.Outbound.Services)+len(d.Services)-len(removed))
	used := make([]bool, len(d.Services))
	gone := 0
	for i := range base.Outbound.Services {
		k := base.Outbound.Services[i].Key()
		if removed[k] {
			gone++
			continue
		}
		if j, ok := changed[k]; ok {
			kept = append(kept, d.Services[j])
			used[j] = true
			continue
		}
		kept = append(kept, base.Outbound.Services[i])
	}
	if gone != len(removed) {
		for _, k := range d.RemovedServices {
			if !slices.ContainsFunc(base.Outbound.Services, func(s Service) bool { return s.Key() == k }) {
				return nil, fmt.Errorf("delta removes service %s, which version %q does not have", k, base.Version)
			}
		}
	}
	var added []Service
	for j := range d.Services {
		if !used[j] {
			added = append(added, d.Services[j])
		}
	}
	s.Outbound.Services = mergeByKey(kept, added)
	if len(s.Outbound.Services) == 0 {
		s.Outbound.Services = nil
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("invalid snapshot %q from delta: %w", s.Version, err)
	}
	return s, nil
}

// mergeByKey inserts added into the key-ordered list kept, in key order.
func mergeByKey(kept, added []Service) []Service {
	if len(added) == 0 {
		return kept
	}
	byKey := func(a, b Service) int { return strings.Compare(a.Key(), b.Key()) }
	slices.SortFunc(added, byKey)
	out := make([]Service, 0, len(kept)+len(added))
	i, j := 0, 0
	for i < len(kept) && j < len(added) {
		if byKey(added[j], kept[i]) < 0 {
			out = append(out, added[j])
			j++
		} else {
			out = append(out, kept[i])
			i++
		}
	}
	out = append(out, kept[i:]...)
	return append(out, added[j:]...)
}
