package compiler

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

// EncodedOutbound is an Outbound encoded once and shared by every proxy of a
// namespace: with a thousand services, encoding it per proxy would dominate.
// It is kept as its services' encodings, not as one document: namespaces
// see mostly the same services, and an encoding equal to another
// namespace's can be shared (see Intern), where one document per namespace
// would hold every service once per namespace. MarshalJSON and WriteJSON
// assemble the document when a snapshot is built.
type EncodedOutbound struct {
	Sources map[string]int64
	// Services are the encoded services, in document order, and
	// OpaquePorts the opaque ports: what a delta against another Outbound
	// needs.
	Services    []EncodedService
	OpaquePorts []uint16
	// opaqueJSON is OpaquePorts encoded.
	opaqueJSON []byte
}

// EncodedService is one service of an EncodedOutbound.
type EncodedService struct {
	// Key is meshconfig.Service.Key.
	Key  string
	JSON json.RawMessage
}

// Intern replaces each service by the one lookup returns, which must be
// equal (the same key and bytes), so that equal services share their memory.
func (e *EncodedOutbound) Intern(lookup func(EncodedService) EncodedService) {
	for i := range e.Services {
		e.Services[i] = lookup(e.Services[i])
	}
}

// Size is the length of the document.
func (e *EncodedOutbound) Size() int {
	size := len(`{}`)
	if len(e.Services) > 0 {
		size += len(`"services":[]`) + len(e.Services) - 1
		for _, s := range e.Services {
			size += len(s.JSON)
		}
	}
	if len(e.opaqueJSON) > 0 {
		size += len(`"opaquePorts":`) + len(e.opaqueJSON)
		if len(e.Services) > 0 {
			size += len(`,`)
		}
	}
	return size
}

// WriteJSON writes the document, as json.Marshal writes the Outbound, to w
// (a hash, a buffer): it never fails but where w does.
func (e *EncodedOutbound) WriteJSON(w io.Writer) error {
	write := func(b []byte) error { _, err := w.Write(b); return err }
	if err := write([]byte{'{'}); err != nil {
		return err
	}
	if len(e.Services) > 0 {
		if err := write([]byte(`"services":[`)); err != nil {
			return err
		}
		for i, s := range e.Services {
			if i > 0 {
				if err := write([]byte{','}); err != nil {
					return err
				}
			}
			if err := write(s.JSON); err != nil {
				return err
			}
		}
		if err := write([]byte{']'}); err != nil {
			return err
		}
	}
	if len(e.opaqueJSON) > 0 {
		if len(e.Services) > 0 {
			if err := write([]byte{','}); err != nil {
				return err
			}
		}
		if err := write([]byte(`"opaquePorts":`)); err != nil {
			return err
		}
		if err := write(e.opaqueJSON); err != nil {
			return err
		}
	}
	return write([]byte{'}'})
}

// MarshalJSON returns the document.
func (e *EncodedOutbound) MarshalJSON() ([]byte, error) {
	b := bytes.NewBuffer(make([]byte, 0, e.Size()))
	e.WriteJSON(b) // a bytes.Buffer does not fail
	return b.Bytes(), nil
}

// Sum is the SHA-256 of the document.
func (e *EncodedOutbound) Sum() [32]byte {
	h := sha256.New()
	e.WriteJSON(h) // a hash does not fail
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
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
	// One service at a time, so that each service's bytes are known and can
	// be shared; the document is what json.Marshal(o) writes (a test checks).
	eo := &EncodedOutbound{OpaquePorts: o.OpaquePorts, Services: make([]EncodedService, len(o.Services))}
	for i := range o.Services {
		sj, err := json.Marshal(&o.Services[i])
		if err != nil {
			return nil, err
		}
		eo.Services[i] = EncodedService{Key: o.Services[i].Key(), JSON: sj}
	}
	if len(o.OpaquePorts) > 0 {
		pj, err := json.Marshal(o.OpaquePorts)
		if err != nil {
			return nil, err
		}
		eo.opaqueJSON = pj
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
	Outbound    *EncodedOutbound    `json:"outbound"`
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
		Outbound:    out,
		Inbound:     in,
	}
	msg.Version = snapshotVersion(msg.Identity, msg.TrustDomain, msg.MTLSMode, out, inJSON)
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
	return snapshotVersion(w.PodIdentity(pod), w.Mesh.TrustDomain, w.Mesh.MTLSMode, out, inJSON)
}

func snapshotVersion(identity, trustDomain string, mode meshconfig.MTLSMode, out *EncodedOutbound, inJSON []byte) string {
	h := sha256.New()
	head, _ := json.Marshal(identity + "|" + trustDomain + "|" + string(mode))
	h.Write(head)
	out.WriteJSON(h)
	h.Write(inJSON)
	return hex.EncodeToString(h.Sum(nil)[:8])
}
