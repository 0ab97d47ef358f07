package compiler

import (
	"crypto/sha256"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

// TestDeterministic: the same cluster state, read in any order, compiles to
// the same versions, so a reconnecting proxy is not sent what it has and
// the config server does not push spurious updates.
func TestDeterministic(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			want := versions(t, newWorld(tc.objs...))
			for i := range 20 {
				rng := rand.New(rand.NewPCG(uint64(i), 7))
				w := newWorld(tc.objs...)
				for k, sl := range w.Slices {
					sl = append([]*discoveryv1.EndpointSlice(nil), sl...)
					rng.Shuffle(len(sl), func(a, b int) { sl[a], sl[b] = sl[b], sl[a] })
					w.Slices[k] = sl
				}
				rng.Shuffle(len(w.Routes), func(a, b int) { w.Routes[a], w.Routes[b] = w.Routes[b], w.Routes[a] })
				rng.Shuffle(len(w.Splits), func(a, b int) { w.Splits[a], w.Splits[b] = w.Splits[b], w.Splits[a] })
				rng.Shuffle(len(w.Policies), func(a, b int) { w.Policies[a], w.Policies[b] = w.Policies[b], w.Policies[a] })
				w.sort()
				if got := versions(t, w); !reflect.DeepEqual(got, want) {
					t.Fatalf("round %d: versions %v, want %v", i, got, want)
				}
			}
		})
	}
}

func versions(t *testing.T, w *World) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, p := range compileAll(t, w).Proxies {
		out[k] = p.Version
	}
	return out
}

// TestVersionFollowsContent: any change a proxy must see changes the
// version; a change it must not see leaves it.
func TestVersionFollowsContent(t *testing.T) {
	base := func() []any { return []any{shopWeb(), webVersions()} }
	v0 := versions(t, newWorld(base()...))["shop/client"]
	changed := map[string][]any{
		"a new route": append(base(), route("shop", "r", 1, 1, []gatewayv1.ParentReference{serviceParent("web", "", 0)})),
		"a new endpoint": append(base(), endpointSlice("shop", "web-zzz", "web", map[string]int32{"http": 8080},
			ep{pod: "web-7", ip: "10.244.0.17"})),
		"a policy generation": append(base(), policy("shop", "p", 2, 1, "Namespace", "shop", meshv1alpha1.ActionDeny)),
	}
	for name, objs := range changed {
		if v := versions(t, newWorld(objs...))["shop/client"]; v == v0 {
			t.Errorf("%s left the version at %s", name, v)
		}
	}
	// A route's status is not part of the snapshot.
	r := route("shop", "r", 1, 1, []gatewayv1.ParentReference{serviceParent("web", "", 0)})
	v1 := versions(t, newWorld(append(base(), r)...))["shop/client"]
	r2 := r.DeepCopy()
	r2.Status.Parents = []gatewayv1.RouteParentStatus{{ControllerName: meshv1alpha1.ControllerName}}
	r2.ResourceVersion = "42"
	if v2 := versions(t, newWorld(append(base(), r2)...))["shop/client"]; v2 != v1 {
		t.Errorf("a status-only change moved the version from %s to %s", v1, v2)
	}
}

// TestWireMatchesSnapshot keeps the pre-encoded wire struct in step with
// meshconfig.Snapshot: a field added to the contract and forgotten here
// would never reach proxies.
func TestWireMatchesSnapshot(t *testing.T) {
	wt, st := reflect.TypeFor[wire](), reflect.TypeFor[meshconfig.Snapshot]()
	if wt.NumField() != st.NumField() {
		t.Fatalf("wire has %d fields, meshconfig.Snapshot %d", wt.NumField(), st.NumField())
	}
	for i := range st.NumField() {
		sf, wf := st.Field(i), wt.Field(i)
		if sf.Name != wf.Name || sf.Tag.Get("json") != wf.Tag.Get("json") {
			t.Errorf("field %d: snapshot %s %q, wire %s %q", i, sf.Name, sf.Tag.Get("json"), wf.Name, wf.Tag.Get("json"))
			continue
		}
		want := sf.Type
		if sf.Name == "Outbound" {
			want = reflect.TypeFor[*EncodedOutbound]()
		}
		if wf.Type != want {
			t.Errorf("field %s: wire type %s, want %s", sf.Name, wf.Type, want)
		}
	}

	// And the bytes: what SnapshotFor sends is what meshconfig.Encode
	// writes for the same snapshot.
	w := newWorld(shopWeb(), webVersions(), httpRouteFull(),
		policy("shop", "p", 1, 1, "Service", "web", meshv1alpha1.ActionAllow, meshv1alpha1.AuthorizationRule{
			From: []meshv1alpha1.AuthorizationSource{{Namespaces: []string{"shop"}}},
		}))
	p := w.Pods[key{"shop", "web-1"}]
	out, err := w.EncodedOutbound("shop")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := w.SnapshotFor(p, out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := meshconfig.Encode(&meshconfig.Snapshot{
		Version:     snap.Version,
		Identity:    w.PodIdentity(p),
		TrustDomain: w.Mesh.TrustDomain,
		MTLSMode:    w.Mesh.MTLSMode,
		Outbound:    w.Outbound("shop"),
		Inbound:     w.Inbound(p),
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(snap.JSON) != string(want) {
		t.Errorf("SnapshotFor wrote\n%s\nmeshconfig.Encode writes\n%s", snap.JSON, want)
	}
}

// TestEncodedOutboundParts checks that the per-service bytes deltas are made
// of are exactly the services of the full encoding, and that SnapshotVersion
// is SnapshotFor's version.
func TestEncodedOutboundParts(t *testing.T) {
	for name, o := range map[string]meshconfig.Outbound{
		"empty":       {},
		"opaque only": {OpaquePorts: []uint16{3306, 5432}},
		"services":    newWorld(shopWeb(), webVersions(), httpRouteFull()).Outbound("shop"),
		"both": {OpaquePorts: []uint16{25}, Services: []meshconfig.Service{
			{Name: "a", Namespace: "x", Ports: []meshconfig.ServicePort{{Port: 1}}},
			{Name: "b<&>", Namespace: "x", Ports: []meshconfig.ServicePort{{Port: 2}}},
		}},
	} {
		t.Run(name, func(t *testing.T) {
			eo, err := EncodeOutbound(o)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := json.Marshal(o)
			got, err := eo.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("EncodeOutbound wrote\n%s\njson.Marshal writes\n%s", got, want)
			}
			if eo.Size() != len(want) || cap(got) != len(got) {
				t.Errorf("Size() = %d, MarshalJSON gave %d bytes (capacity %d); want %d", eo.Size(), len(got), cap(got), len(want))
			}
			if eo.Sum() != sha256.Sum256(want) {
				t.Error("Sum() is not the SHA-256 of the document")
			}
			if len(eo.Services) != len(o.Services) {
				t.Fatalf("%d encoded services, want %d", len(eo.Services), len(o.Services))
			}
			for i, es := range eo.Services {
				sj, _ := json.Marshal(o.Services[i])
				if string(es.JSON) != string(sj) || es.Key != o.Services[i].Key() {
					t.Errorf("service %d: %s %s, want %s %s", i, es.Key, es.JSON, o.Services[i].Key(), sj)
				}
			}
		})
	}
	w := newWorld(shopWeb(), webVersions(), httpRouteFull())
	p := w.Pods[key{"shop", "web-1"}]
	out, err := w.EncodedOutbound("shop")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := w.SnapshotFor(p, out)
	if err != nil {
		t.Fatal(err)
	}
	in, _ := json.Marshal(w.Inbound(p))
	if v := w.SnapshotVersion(p, out, in); v != snap.Version {
		t.Errorf("SnapshotVersion = %s, SnapshotFor's version %s", v, snap.Version)
	}
}

// TestSplitPrecedence pins the precedence documented on activeSplit.
func TestSplitPrecedence(t *testing.T) {
	canary := func() *meshv1alpha1.TrafficSplit {
		return split("shop", "canary", "web", 1, 1, nil, backendRef("web-v1", 80, 1), backendRef("web-v2", 80, 1))
	}
	clientB := pod("team-b", "client", "c", true, nil)
	cases := []struct {
		name         string
		objs         []any
		accepted     metav1.ConditionStatus
		reason       string
		splitApplies map[string]bool // by client pod
	}{
		{
			name:         "split alone",
			objs:         []any{canary()},
			accepted:     metav1.ConditionTrue,
			reason:       meshv1alpha1.ReasonAccepted,
			splitApplies: map[string]bool{"shop/client": true, "team-b/client": true},
		},
		{
			name: "producer route on another port of the Service",
			objs: []any{canary(), service("shop", "web", "10.96.0.10", appWeb,
				svcPort{name: "http", port: 80, target: intstr.FromInt32(8080)}, svcPort{name: "grpc", port: 9000}),
				route("shop", "r", 1, 2, []gatewayv1.ParentReference{serviceParent("web", "", 9000)})},
			accepted:     metav1.ConditionFalse,
			reason:       meshv1alpha1.ReasonOverridden,
			splitApplies: map[string]bool{"shop/client": false, "team-b/client": false},
		},
		{
			name:         "route to a port the Service lacks is not Accepted and overrides nothing",
			objs:         []any{canary(), route("shop", "r", 1, 2, []gatewayv1.ParentReference{serviceParent("web", "", 81)})},
			accepted:     metav1.ConditionTrue,
			reason:       meshv1alpha1.ReasonAccepted,
			splitApplies: map[string]bool{"shop/client": true, "team-b/client": true},
		},
		{
			name:         "consumer route replaces the split for its namespace only",
			objs:         []any{canary(), route("team-b", "r", 1, 2, []gatewayv1.ParentReference{serviceParent("web", "shop", 0)})},
			accepted:     metav1.ConditionTrue,
			reason:       meshv1alpha1.ReasonAccepted,
			splitApplies: map[string]bool{"shop/client": true, "team-b/client": false},
		},
		{
			name:         "route for a Gateway does not count",
			objs:         []any{canary(), route("shop", "r", 1, 2, []gatewayv1.ParentReference{gatewayParent("edge")})},
			accepted:     metav1.ConditionTrue,
			reason:       meshv1alpha1.ReasonAccepted,
			splitApplies: map[string]bool{"shop/client": true, "team-b/client": true},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(append([]any{shopWeb(), webVersions(), clientB}, tc.objs...)...)
			r := compileAll(t, w)
			wantCondition(t, r, "TrafficSplit shop/canary", "Accepted", tc.accepted, tc.reason)
			for client, want := range tc.splitApplies {
				_, got := r.Proxies[client].Sources["TrafficSplit shop/canary"]
				p := outPort(t, proxy(t, r, client), "shop", "web", 80)
				inBackends := len(p.DefaultBackends) == 2
				if got != want || inBackends != want {
					t.Errorf("%s: split in sources %v, in default backends %v; want %v", client, got, inBackends, want)
				}
			}
		})
	}
}
