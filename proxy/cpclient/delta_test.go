package cpclient

import (
	"strings"
	"testing"

	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

func deltaResp(t *testing.T, version, base string, d meshconfig.Delta) *meshapiv1.ConfigResponse {
	t.Helper()
	d.Version, d.BaseVersion = version, base
	d.Identity, d.TrustDomain, d.MTLSMode = testID, testTD, meshconfig.MTLSStrict
	b, err := meshconfig.EncodeDelta(&d)
	if err != nil {
		t.Fatal(err)
	}
	return &meshapiv1.ConfigResponse{Version: version, Delta: b, BaseVersion: base}
}

func service(name, addr string) meshconfig.Service {
	return meshconfig.Service{
		Name: name, Namespace: "shop", Addresses: []string{addr},
		Ports: []meshconfig.ServicePort{{Port: 80, DefaultBackends: []meshconfig.Backend{{Name: name, Namespace: "shop", Weight: 1,
			Endpoints: []meshconfig.Endpoint{{Address: "10.244.0.9:8080"}}}}}},
	}
}

func TestDeltasAppliedAndRejected(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.cp.publish(snapshotResp(t, "v1", nil))
	h.run(t)
	if a := h.cp.nextAck(t); a.GetVersion() != "v1" || a.GetError() != "" {
		t.Fatalf("ack = %v, want v1 applied", a)
	}
	if hello := h.cp.helloList()[0]; !hello.GetAcceptsDeltas() {
		t.Errorf("Hello does not say the proxy accepts deltas: %v", hello)
	}

	serves := func(version string, services ...string) {
		t.Helper()
		s := h.proxy.Snapshot()
		var got []string
		for _, svc := range s.Outbound.Services {
			got = append(got, svc.Key())
		}
		if s.Version != version || strings.Join(got, ",") != strings.Join(services, ",") {
			t.Fatalf("proxy serves %s with services %v, want %s with %v", s.Version, got, version, services)
		}
		if len(s.Inbound.Ports) != 1 || s.Inbound.Ports[0].Port != 8080 {
			t.Errorf("the delta lost the inbound part: %+v", s.Inbound)
		}
	}

	h.cp.publish(deltaResp(t, "v2", "v1", meshconfig.Delta{Services: []meshconfig.Service{service("web", "10.96.0.1"), service("api", "10.96.0.2")}}))
	if a := h.cp.nextAck(t); a.GetVersion() != "v2" || a.GetError() != "" {
		t.Fatalf("ack = %v, want v2 applied", a)
	}
	serves("v2", "shop/api", "shop/web")

	both := deltaResp(t, "both", "v2", meshconfig.Delta{})
	both.Snapshot = snapshotResp(t, "both", nil).Snapshot
	// (The test control plane sends a response only when its version is new.)
	for _, tc := range []struct {
		name string
		resp *meshapiv1.ConfigResponse
		want string
	}{
		{"other base", deltaResp(t, "v3", "v1", meshconfig.Delta{}), `delta applies to version "v1", but this proxy holds "v2"`},
		{"invalid result", deltaResp(t, "v3b", "v2", meshconfig.Delta{Services: []meshconfig.Service{service("web", "nope")}}), `address "nope"`},
		{"unknown removal", deltaResp(t, "v3c", "v2", meshconfig.Delta{RemovedServices: []string{"shop/db"}}), "shop/db"},
		{"base versions disagree", func() *meshapiv1.ConfigResponse {
			r := deltaResp(t, "v3d", "v1", meshconfig.Delta{})
			r.BaseVersion = "v2"
			return r
		}(), "base version"},
		{"snapshot and delta", both, "both a snapshot and a delta"},
		{"not JSON", &meshapiv1.ConfigResponse{Version: "v3e", BaseVersion: "v2", Delta: []byte("{")}, "decoding delta"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.cp.publish(tc.resp)
			a := h.cp.nextAck(t)
			if a.GetVersion() != tc.resp.GetVersion() || !strings.Contains(a.GetError(), tc.want) {
				t.Fatalf("ack = %v, want a rejection of %q mentioning %q", a, tc.resp.GetVersion(), tc.want)
			}
			serves("v2", "shop/api", "shop/web")
		})
	}

	// The last good snapshot is still the base: a removal applies to it.
	h.cp.publish(deltaResp(t, "v4", "v2", meshconfig.Delta{RemovedServices: []string{"shop/api"}}))
	if a := h.cp.nextAck(t); a.GetVersion() != "v4" || a.GetError() != "" {
		t.Fatalf("ack = %v, want v4 applied", a)
	}
	serves("v4", "shop/web")

	// A full snapshot replaces everything, and is the next base.
	h.cp.publish(snapshotResp(t, "v5", nil))
	h.cp.nextAck(t)
	serves("v5")
	h.cp.publish(deltaResp(t, "v6", "v5", meshconfig.Delta{Services: []meshconfig.Service{service("db", "10.96.0.3")}}))
	if a := h.cp.nextAck(t); a.GetVersion() != "v6" || a.GetError() != "" {
		t.Fatalf("ack = %v, want v6 applied", a)
	}
	serves("v6", "shop/db")

	// Across a reconnect the snapshot held stays the base: Hello names it,
	// and a delta against it applies.
	n := len(h.cp.helloList())
	h.cp.restart()
	eventually(t, "Hello after the restart", func() bool { return len(h.cp.helloList()) > n })
	if hello := h.cp.helloList()[n]; hello.GetLastVersion() != "v6" || !hello.GetAcceptsDeltas() {
		t.Errorf("Hello after the restart = %v, want last_version v6 and deltas accepted", hello)
	}
	h.cp.publish(deltaResp(t, "v7", "v6", meshconfig.Delta{RemovedServices: []string{"shop/db"}}))
	if a := h.cp.nextAck(t); a.GetVersion() != "v7" || a.GetError() != "" {
		t.Fatalf("ack = %v, want v7 applied", a)
	}
	serves("v7")
}
