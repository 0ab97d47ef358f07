package compiler

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

// EncodedOutbound is an Outbound encoded once and shared by every proxy of a
// namespace: with a thousand services, encoding it per proxy would dominate.
type EncodedOutbound struct {
	JSON    json.RawMessage
	Sources map[string]int64
	// Services are the encoded services, in the order of JSON (each a
	// slice of JSON), and OpaquePorts the opaque ports: what a delta
	// against another Outbound needs.
	Services    []EncodedService
	OpaquePorts []uint16
}

// EncodedService is one service of an EncodedOutbound.
type EncodedService struct {
	// Key is meshconfig.Service.Key.
	Key  string
	JSON json.RawMessage
}

// EncodedOutbound compiles and encodes the Outbound of clientNS, with the
// sources of every route and TrafficSplit it carries. Prefer it to
// EncodeOutbound: a split without matches only replaces default backends,
// which do not name it, so only the World knows it is in force.
func (w *World) EncodedOutbound(clientNS string) (*EncodedOutbound, error) {
	eo, err := EncodeOutbound(w.Outbound(clientNS))
	if err != nil {
		return nil, err
	}
	for _, k := range w.serviceKeys() {
		svc := w.Services[k]
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		if s := w.activeSplit(svc, clientNS); s != nil && len(s.Spec.Matches) == 0 && hasTCPPort(svc) {
			eo.Sources[splitSource(s)] = s.Generation
		}
	}
	return eo, nil
}

func hasTCPPort(svc *corev1.Service) bool {
	for _, p := range svc.Spec.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			return true
		}
	}
	return false
}

// EncodeOutbound encodes o and records which routes it carries at which
// generation. It cannot see TrafficSplits without matches: use
// World.EncodedOutbound.
func EncodeOutbound(o meshconfig.Outbound) (*EncodedOutbound, error) {
	// Written as json.Marshal(o) writes it (a test checks), one service at
	// a time so that each service's bytes are known. The services are
	// encoded first and then copied once into a buffer of the exact size:
	// this is kept as long as the namespace's config is current, and
	// growing a buffer to it would allocate about twice as much again.
	encoded := make([][]byte, len(o.Services))
	size := len(`{}`)
	if len(o.Services) > 0 {
		size += len(`"services":[]`) + len(o.Services) - 1
	}
	for i := range o.Services {
		sj, err := json.Marshal(&o.Services[i])
		if err != nil {
			return nil, err
		}
		encoded[i] = sj
		size += len(sj)
	}
	var pj []byte
	if len(o.OpaquePorts) > 0 {
		var err error
		if pj, err = json.Marshal(o.OpaquePorts); err != nil {
			return nil, err
		}
		size += len(`"opaquePorts":`) + len(pj)
		if len(o.Services) > 0 {
			size += len(`,`)
		}
	}
	b := bytes.NewBuffer(make([]byte, 0, size))
	b.WriteByte('{')
	bounds := make([]int, 0, len(o.Services)+1)
	if len(o.Services) > 0 {
		b.WriteString(`"services":[`)
		for i, sj := range encoded {
			if i > 0 {
				b.WriteByte(',')
			}
			bounds = append(bounds, b.Len())
			b.Write(sj)
		}
		bounds = append(bounds, b.Len())
		b.WriteByte(']')
	}
	if len(o.OpaquePorts) > 0 {
		if len(o.Services) > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"opaquePorts":`)
		b.Write(pj)
	}
	b.WriteByte('}')
	all := b.Bytes()
	if cap(all) > len(all) {
		// Not reached: size counts every byte written.
		all = bytes.Clone(all)
	}
	eo := &EncodedOutbound{JSON: all, OpaquePorts: o.OpaquePorts, Services: make([]EncodedService, len(o.Services))}
	for i := range o.Services {
		// A comma separates two services: the next one starts one byte later.
		end := bounds[i+1]
		if i+1 < len(o.Services) {
			end--
		}
		eo.Services[i] = EncodedService{Key: o.Services[i].Key(), JSON: all[bounds[i]:end:end]}
	}
	src := map[string]int64{}
	for _, s := range o.Services {
		for _, p := range s.Ports {
			for _, r := range p.Routes {
				src[r.Source] = r.Generation
			}
		}
	}
	eo.Sources = src
	return eo, nil
}

// Snapshot is what is sent to one proxy.
type Snapshot struct {
	// Version is a content hash: equal snapshots have equal versions, so a
	// reconnecting proxy that holds it already is not sent it again.
	Version string
	JSON    []byte
	// Sources maps "Kind namespace/name" of every route, split and policy
	// the snapshot applies to the generation applied, for "applied by N of M
	// proxies" status.
	Sources map[string]int64
}

// wire mirrors meshconfig.Snapshot with the outbound part pre-encoded; a test
// keeps the two in step.
type wire struct {
	Version     string              `json:"version"`
	Identity    string              `json:"identity,omitempty"`
	TrustDomain string              `json:"trustDomain,omitempty"`
	MTLSMode    meshconfig.MTLSMode `json:"mtlsMode,omitempty"`
	Outbound    json.RawMessage     `json:"outbound"`
	Inbound     meshconfig.Inbound  `json:"inbound"`
}

// SnapshotFor assembles the snapshot of pod's proxy.
func (w *World) SnapshotFor(pod *corev1.Pod, out *EncodedOutbound) (*Snapshot, error) {
	in := w.Inbound(pod)
	inJSON, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	msg := wire{
		Identity:    w.PodIdentity(pod),
		TrustDomain: w.Mesh.TrustDomain,
		MTLSMode:    w.Mesh.MTLSMode,
		Outbound:    out.JSON,
		Inbound:     in,
	}
	msg.Version = snapshotVersion(msg.Identity, msg.TrustDomain, msg.MTLSMode, out.JSON, inJSON)
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	src := make(map[string]int64, len(out.Sources)+len(in.Policies))
	for k, v := range out.Sources {
		src[k] = v
	}
	for _, p := range in.Policies {
		src["AuthorizationPolicy "+p.Source] = p.Generation
	}
	return &Snapshot{Version: msg.Version, JSON: b, Sources: src}, nil
}

// SnapshotVersion is the Version SnapshotFor gives pod's snapshot, from its
// inbound config encoded (json.Marshal(w.Inbound(pod))), without building
// the snapshot: a delta carries it.
func (w *World) SnapshotVersion(pod *corev1.Pod, out *EncodedOutbound, inJSON []byte) string {
	return snapshotVersion(w.PodIdentity(pod), w.Mesh.TrustDomain, w.Mesh.MTLSMode, out.JSON, inJSON)
}

func snapshotVersion(identity, trustDomain string, mode meshconfig.MTLSMode, outJSON, inJSON []byte) string {
	h := sha256.New()
	head, _ := json.Marshal(identity + "|" + trustDomain + "|" + string(mode))
	h.Write(head)
	h.Write(outJSON)
	h.Write(inJSON)
	return hex.EncodeToString(h.Sum(nil)[:8])
}
