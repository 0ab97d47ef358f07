package meshconfig

import (
	"reflect"
	"strings"
	"testing"
)

func svc(ns, name, addr string, weight uint32) Service {
	return Service{
		Name: name, Namespace: ns, Addresses: []string{addr},
		Ports: []ServicePort{{Port: 80, DefaultBackends: []Backend{{Name: name, Namespace: ns, Weight: weight,
			Endpoints: []Endpoint{{Address: "10.1.0.1:8080"}}}}}},
	}
}

func base() *Snapshot {
	return &Snapshot{
		Version: "v1", Identity: "spiffe://td/ns/a/sa/x", TrustDomain: "td", MTLSMode: MTLSStrict,
		Outbound: Outbound{
			Services:    []Service{svc("a", "one", "10.0.0.1", 1), svc("a", "three", "10.0.0.3", 1), svc("b", "two", "10.0.0.2", 1)},
			OpaquePorts: []uint16{3306},
		},
		Inbound: Inbound{Ports: []InboundPort{{Port: 8080}}, DefaultPolicy: DefaultAllow},
	}
}

func TestDeltaApply(t *testing.T) {
	empty := []uint16{}
	for _, tc := range []struct {
		name  string
		delta Delta
		want  func(s *Snapshot)
	}{{
		name:  "replace one service",
		delta: Delta{Services: []Service{svc("a", "three", "10.0.0.3", 7)}},
		want:  func(s *Snapshot) { s.Outbound.Services[1] = svc("a", "three", "10.0.0.3", 7) },
	}, {
		name:  "add in key order",
		delta: Delta{Services: []Service{svc("c", "last", "10.0.0.9", 1), svc("a", "aa", "10.0.0.8", 1), svc("a", "two", "10.0.0.7", 1)}},
		want: func(s *Snapshot) {
			o := s.Outbound.Services
			s.Outbound.Services = []Service{svc("a", "aa", "10.0.0.8", 1), o[0], o[1], svc("a", "two", "10.0.0.7", 1), o[2], svc("c", "last", "10.0.0.9", 1)}
		},
	}, {
		name:  "remove and replace",
		delta: Delta{RemovedServices: []string{"a/one"}, Services: []Service{svc("b", "two", "10.0.0.2", 0)}},
		want: func(s *Snapshot) {
			s.Outbound.Services = []Service{s.Outbound.Services[1], svc("b", "two", "10.0.0.2", 0)}
		},
	}, {
		name:  "remove every service",
		delta: Delta{RemovedServices: []string{"a/one", "b/two", "a/three"}},
		want:  func(s *Snapshot) { s.Outbound.Services = nil },
	}, {
		name:  "clear opaque ports",
		delta: Delta{OpaquePorts: &empty},
		want:  func(s *Snapshot) { s.Outbound.OpaquePorts = nil },
	}, {
		name:  "replace inbound and header",
		delta: Delta{Inbound: &Inbound{DefaultPolicy: DefaultDeny}, MTLSMode: MTLSPermissive},
		want: func(s *Snapshot) {
			s.Inbound = Inbound{DefaultPolicy: DefaultDeny}
			s.MTLSMode = MTLSPermissive
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			b := base()
			d := tc.delta
			d.Version, d.BaseVersion = "v2", "v1"
			if d.Identity == "" {
				d.Identity, d.TrustDomain = b.Identity, b.TrustDomain
			}
			if d.MTLSMode == "" {
				d.MTLSMode = b.MTLSMode
			}
			// Through the wire, as a proxy receives it.
			enc, err := EncodeDelta(&d)
			if err != nil {
				t.Fatal(err)
			}
			dd, err := DecodeDelta(enc)
			if err != nil {
				t.Fatal(err)
			}
			got, err := dd.Apply(b)
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			want := base()
			want.Version = "v2"
			tc.want(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Apply gave\n%+v\nwant\n%+v", got, want)
			}
			// The result must be what decoding the same snapshot sent whole gives.
			full, err := Encode(want)
			if err != nil {
				t.Fatal(err)
			}
			decoded, err := Decode(full)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, decoded) {
				t.Errorf("Apply gave\n%+v\nthe full snapshot decodes to\n%+v", got, decoded)
			}
			if !reflect.DeepEqual(b, base()) {
				t.Errorf("Apply modified its base: %+v", b)
			}
		})
	}
}

func TestDeltaApplyRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		base  *Snapshot
		delta Delta
		want  string
	}{
		{"no base", nil, Delta{Version: "v2", BaseVersion: "v1"}, "no snapshot is held"},
		{"other base", base(), Delta{Version: "v2", BaseVersion: "v0"}, `applies to version "v0", but version "v1" is held`},
		{"no base version", base(), Delta{Version: "v2"}, "applies to version"},
		{"remove unknown", base(), Delta{Version: "v2", BaseVersion: "v1", RemovedServices: []string{"a/nope"}}, "which version \"v1\" does not have"},
		{"remove twice", base(), Delta{Version: "v2", BaseVersion: "v1", RemovedServices: []string{"a/one", "a/one"}}, "twice"},
		{"replace and remove", base(), Delta{Version: "v2", BaseVersion: "v1", RemovedServices: []string{"a/one"}, Services: []Service{svc("a", "one", "10.0.0.1", 2)}}, "twice"},
		{"invalid result", base(), Delta{Version: "v2", BaseVersion: "v1", Services: []Service{svc("a", "one", "not-an-ip", 1)}}, "invalid snapshot \"v2\" from delta"},
		{"no version", base(), Delta{BaseVersion: "v1"}, "version is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.delta.Apply(tc.base)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Apply: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestDecodeDeltaStrict(t *testing.T) {
	for _, in := range []string{`{"version":"v2","baseVersion":"v1","servicez":[]}`, `{"version":"v2"} {}`, `[]`} {
		if _, err := DecodeDelta([]byte(in)); err == nil {
			t.Errorf("DecodeDelta(%s) accepted it", in)
		}
	}
}
