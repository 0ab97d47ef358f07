package sidecar

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/authz"
	"github.com/weftmesh/weft/proxy/metrics"
	"github.com/weftmesh/weft/proxy/upstream"
)

// ForwarderFactory builds the HTTP handler for one destination service port.
// This is the seam for proxy/route: the proxy calls the factory once per
// service port each time a snapshot is applied (never on the request path),
// then calls the handler for every request whose original destination is that
// service port, after protocol detection. The handler must send upstream only
// through pool.RoundTripper(endpoint), which dials plaintext or mTLS with the
// endpoint's expected identity and reports what it did for the metrics. The
// request arrives with Host and path as the client sent them; the response
// status it writes is what metrics record. DefaultForwarder is used until a
// router is plugged in with Config.Forwarders.
type ForwarderFactory func(svc *meshconfig.Service, port *meshconfig.ServicePort, pool *upstream.Pool) http.Handler

// table is a compiled snapshot: everything the hot path looks up, built once
// per snapshot and swapped atomically.
type table struct {
	snap    *meshconfig.Snapshot
	json    []byte
	dests   map[netip.AddrPort]*dest
	opaque  map[uint16]bool
	inbound map[uint16]string // port → metrics label
	ids     []string
	// authz decides inbound requests and connections with this snapshot's
	// policies; it swaps together with everything else.
	authz *authz.Engine
}

// dest is one service port of the snapshot.
type dest struct {
	label   string // "namespace/name"
	proto   meshconfig.Protocol
	handler http.Handler
	lb      *balancer // for opaque TCP: default backends
}

func compile(s *meshconfig.Snapshot, pool *upstream.Pool, f ForwarderFactory, extraOpaque []uint16) (*table, error) {
	raw, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	az, err := authz.CompileSnapshot(s)
	if err != nil {
		return nil, fmt.Errorf("inbound authorization: %w", err)
	}
	t := &table{snap: s, json: raw, dests: map[netip.AddrPort]*dest{}, opaque: map[uint16]bool{}, inbound: map[uint16]string{},
		authz: az}
	for _, p := range append(s.Outbound.OpaquePorts, extraOpaque...) {
		t.opaque[p] = true
	}
	if s.Identity != "" {
		t.ids = append(t.ids, s.Identity)
	}
	for i := range s.Outbound.Services {
		svc := &s.Outbound.Services[i]
		for j := range svc.Ports {
			sp := &svc.Ports[j]
			d := &dest{
				label:   svc.Namespace + "/" + svc.Name,
				proto:   sp.Protocol,
				handler: f(svc, sp, pool),
				lb:      newBalancer(sp.DefaultBackends),
			}
			for _, a := range svc.Addresses {
				addr, _ := netip.ParseAddr(a) // validated by meshconfig
				t.dests[netip.AddrPortFrom(addr.Unmap(), sp.Port)] = d
			}
			t.ids = append(t.ids, identities(sp)...)
		}
	}
	for _, p := range s.Inbound.Ports {
		name := p.Name
		if name == "" {
			name = strconv.Itoa(int(p.Port))
		}
		t.inbound[p.Port] = name
	}
	return t, nil
}

func identities(sp *meshconfig.ServicePort) []string {
	var out []string
	add := func(bs []meshconfig.Backend) {
		for _, b := range bs {
			for _, e := range b.Endpoints {
				if e.Identity != "" {
					out = append(out, e.Identity)
				}
			}
		}
	}
	add(sp.DefaultBackends)
	for _, r := range sp.Routes {
		for _, rule := range r.Rules {
			add(rule.Backends)
		}
	}
	return out
}

// endpoints lists every endpoint address, for upstream.Pool.Retain.
func (t *table) endpoints() map[string]bool {
	keep := map[string]bool{}
	for _, svc := range t.snap.Outbound.Services {
		for i := range svc.Ports {
			for _, b := range svc.Ports[i].DefaultBackends {
				for _, e := range b.Endpoints {
					keep[e.Address] = true
				}
			}
			for _, r := range svc.Ports[i].Routes {
				for _, rule := range r.Rules {
					for _, b := range rule.Backends {
						for _, e := range b.Endpoints {
							keep[e.Address] = true
						}
					}
				}
			}
		}
	}
	return keep
}

func (t *table) inboundLabel(port uint16) string {
	if t == nil {
		return metrics.Unknown
	}
	if l, ok := t.inbound[port]; ok {
		return l
	}
	return metrics.Unknown
}

// balancer picks a backend at random by weight, then its endpoints round
// robin. It is immutable apart from the counters.
type balancer struct {
	backends []weighted
	total    uint32
}

type weighted struct {
	upTo uint32 // cumulative weight
	eps  []meshconfig.Endpoint
	next *atomic.Uint32
}

func newBalancer(bs []meshconfig.Backend) *balancer {
	b := &balancer{}
	for _, be := range bs {
		if be.Weight == 0 || len(be.Endpoints) == 0 {
			continue
		}
		b.total += be.Weight
		b.backends = append(b.backends, weighted{upTo: b.total, eps: be.Endpoints, next: new(atomic.Uint32)})
	}
	return b
}

func (b *balancer) pick() (meshconfig.Endpoint, bool) {
	if b.total == 0 {
		return meshconfig.Endpoint{}, false
	}
	r := rand.Uint32N(b.total)
	for _, w := range b.backends {
		if r < w.upTo {
			i := w.next.Add(1) - 1
			return w.eps[int(i%uint32(len(w.eps)))], true
		}
	}
	return meshconfig.Endpoint{}, false
}
