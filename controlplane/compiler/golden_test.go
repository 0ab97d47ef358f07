package compiler

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the compiler's output")

// proxyResult is what one meshed pod's proxy is sent. Its outbound part is
// shared by its namespace and stored once, in result.Outbound.
type proxyResult struct {
	Version  string               `json:"version"`
	Identity string               `json:"identity"`
	Sources  map[string]int64     `json:"sources,omitempty"`
	Inbound  meshconfig.Inbound   `json:"inbound"`
	Snapshot *meshconfig.Snapshot `json:"-"`
}

// result is everything a World compiles to: the outbound view of each
// namespace with a meshed pod, one snapshot per meshed pod and the status of
// every routing and policy object.
type result struct {
	Outbound map[string]meshconfig.Outbound `json:"outbound"`
	Proxies  map[string]proxyResult         `json:"proxies"`
	Status   map[string]any                 `json:"status,omitempty"`
}

// compileAll compiles w the way the config server and the status writers
// do, and checks that every snapshot passes the proxy's strict decoder.
func compileAll(t *testing.T, w *World) result {
	t.Helper()
	r := result{Outbound: map[string]meshconfig.Outbound{}, Proxies: map[string]proxyResult{}, Status: map[string]any{}}
	outs := map[string]*EncodedOutbound{}
	for k, p := range w.Pods {
		if !Meshed(p) {
			continue
		}
		out := outs[p.Namespace]
		if out == nil {
			var err error
			if out, err = w.EncodedOutbound(p.Namespace); err != nil {
				t.Fatalf("encoding outbound of %s: %v", p.Namespace, err)
			}
			outs[p.Namespace] = out
		}
		snap, err := w.SnapshotFor(p, out)
		if err != nil {
			t.Fatalf("snapshot of %s: %v", k, err)
		}
		dec, err := meshconfig.Decode(snap.JSON)
		if err != nil {
			t.Fatalf("the proxy would reject the snapshot of %s: %v", k, err)
		}
		if dec.Version != snap.Version {
			t.Fatalf("snapshot of %s: version %q in JSON, %q reported", k, dec.Version, snap.Version)
		}
		if prev, ok := r.Outbound[p.Namespace]; ok && !reflect.DeepEqual(prev, dec.Outbound) {
			t.Fatalf("two proxies of namespace %s got different outbound views", p.Namespace)
		}
		r.Outbound[p.Namespace] = dec.Outbound
		r.Proxies[k.String()] = proxyResult{Version: snap.Version, Identity: dec.Identity, Sources: snap.Sources, Inbound: dec.Inbound, Snapshot: dec}
	}
	for _, rt := range w.Routes {
		r.Status["HTTPRoute "+rt.Namespace+"/"+rt.Name] = w.RouteParents(rt)
	}
	for _, s := range w.Splits {
		r.Status["TrafficSplit "+s.Namespace+"/"+s.Name] = w.SplitConditions(s)
	}
	for _, p := range w.Policies {
		r.Status["AuthorizationPolicy "+p.Namespace+"/"+p.Name] = w.PolicyConditions(p)
	}
	return r
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(tc.objs...)
			got := compileAll(t, w)
			b, err := json.MarshalIndent(got, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, '\n')
			file := filepath.Join("testdata", tc.name+".json")
			if *update {
				if err := os.WriteFile(file, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run `go test ./controlplane/compiler -run TestGolden -update` to create it)", err)
			}
			if !bytes.Equal(b, want) {
				t.Errorf("compiled output differs from %s (rerun with -update and review the diff):\n%s", file, lineDiff(string(want), string(b)))
			}
			if tc.check != nil {
				tc.check(t, got)
			}
		})
	}
}

// lineDiff shows the first lines that differ, enough to see what changed.
func lineDiff(want, got string) string {
	wl, gl := splitLines(want), splitLines(got)
	var out bytes.Buffer
	shown := 0
	for i := 0; i < max(len(wl), len(gl)) && shown < 20; i++ {
		var a, b string
		if i < len(wl) {
			a = wl[i]
		}
		if i < len(gl) {
			b = gl[i]
		}
		if a != b {
			out.WriteString("line ")
			out.WriteString(itoa(i + 1))
			out.WriteString(":\n- " + a + "\n+ " + b + "\n")
			shown++
		}
	}
	return out.String()
}

func splitLines(s string) []string { return strings.Split(s, "\n") }

func itoa(i int) string { return strconv.Itoa(i) }

// Helpers for the per-case checks, which pin the behaviour a user relies on
// so that an -update cannot silently bless a regression.

func proxy(t *testing.T, r result, pod string) *meshconfig.Snapshot {
	t.Helper()
	p, ok := r.Proxies[pod]
	if !ok {
		t.Fatalf("no snapshot for %s; have %v", pod, keys(r.Proxies))
	}
	return p.Snapshot
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func outService(t *testing.T, s *meshconfig.Snapshot, ns, name string) meshconfig.Service {
	t.Helper()
	for _, svc := range s.Outbound.Services {
		if svc.Namespace == ns && svc.Name == name {
			return svc
		}
	}
	t.Fatalf("snapshot %s has no outbound service %s/%s", s.Identity, ns, name)
	return meshconfig.Service{}
}

func outPort(t *testing.T, s *meshconfig.Snapshot, ns, name string, port uint16) meshconfig.ServicePort {
	t.Helper()
	for _, p := range outService(t, s, ns, name).Ports {
		if p.Port == port {
			return p
		}
	}
	t.Fatalf("outbound service %s/%s has no port %d", ns, name, port)
	return meshconfig.ServicePort{}
}

func condition(t *testing.T, r result, obj, typ string) metav1.Condition {
	t.Helper()
	var conds []metav1.Condition
	switch v := r.Status[obj].(type) {
	case []metav1.Condition:
		conds = v
	case []gatewayv1.RouteParentStatus:
		if len(v) != 1 {
			t.Fatalf("%s: %d parents in status, want 1", obj, len(v))
		}
		conds = v[0].Conditions
	default:
		t.Fatalf("no status for %s; have %v", obj, keys(r.Status))
	}
	for _, c := range conds {
		if c.Type == typ {
			return c
		}
	}
	t.Fatalf("%s has no %s condition", obj, typ)
	return metav1.Condition{}
}

func wantCondition(t *testing.T, r result, obj, typ string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	c := condition(t, r, obj, typ)
	if c.Status != status || c.Reason != reason {
		t.Errorf("%s %s = %s/%s (%q), want %s/%s", obj, typ, c.Status, c.Reason, c.Message, status, reason)
	}
}

func backendNames(bs []meshconfig.Backend) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Namespace+"/"+b.Name+":"+itoa(int(b.Weight)))
	}
	return out
}

func addresses(b meshconfig.Backend) []string {
	var out []string
	for _, e := range b.Endpoints {
		out = append(out, e.Address+" "+e.Identity)
	}
	return out
}
