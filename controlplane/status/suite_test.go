package status

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
)

var env *testenv.Env

// TestMain starts one API server for the package. Where the binaries are
// missing outside CI the pure tests still run and the others skip.
func TestMain(m *testing.M) {
	if _, err := testenv.AssetsDir(); err != nil && os.Getenv("CI") == "" {
		os.Exit(m.Run())
	}
	os.Exit(testenv.Main(m, testenv.Options{GatewayAPI: true}, func(e *testenv.Env) { env = e }))
}

func needEnv(t *testing.T) client.Client {
	t.Helper()
	if env == nil {
		t.Skip("no local API server: run `make envtest-assets`")
	}
	return env.Client
}

// fakeCounter is an AppliedCounter with set answers: per source, how many
// proxies carry it, and how many of them acknowledged which generation.
type fakeCounter struct {
	mu      sync.Mutex
	counts  map[string]fakeCount
	changed chan struct{}
}

type fakeCount struct {
	gen            int64
	applied, total int
}

func newFakeCounter() *fakeCounter {
	return &fakeCounter{counts: map[string]fakeCount{}, changed: make(chan struct{}, 1)}
}

func (f *fakeCounter) Applied(source string, gen int64) (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.counts[source]
	if gen > c.gen {
		return 0, c.total
	}
	return c.applied, c.total
}

func (f *fakeCounter) Changed() <-chan struct{} { return f.changed }

// set records that applied of total proxies carrying source acknowledged
// gen, and signals the change.
func (f *fakeCounter) set(source string, gen int64, applied, total int) {
	f.mu.Lock()
	f.counts[source] = fakeCount{gen, applied, total}
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

var nsSeq atomic.Int64

// newNamespace makes a namespace of the test's own.
func newNamespace(t *testing.T, c client.Client) string {
	t.Helper()
	name := fmt.Sprintf("status-%d", nsSeq.Add(1))
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

func create(t *testing.T, c client.Client, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := c.Create(context.Background(), o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

func svc(ns, name string, ports ...int32) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}}}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("p%d", p), Port: p})
	}
	return s
}

func slice(ns, service string) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: service + "-x", Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("p80"), Port: ptr.To(int32(8080))}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.5.1"}}},
	}
}

func withPort(p gatewayv1.ParentReference, port int32) gatewayv1.ParentReference {
	p.Port = ptr.To(gatewayv1.PortNumber(port))
	return p
}

func backend(name string, port int32, weight int32) gatewayv1.HTTPBackendRef {
	return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{
		BackendObjectReference: gatewayv1.BackendObjectReference{Name: gatewayv1.ObjectName(name), Port: ptr.To(gatewayv1.PortNumber(port))},
		Weight:                 ptr.To(weight),
	}}
}

func httpRoute(ns, name string, parents []gatewayv1.ParentReference, backends ...gatewayv1.HTTPBackendRef) *gatewayv1.HTTPRoute {
	return &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parents},
			Rules:           []gatewayv1.HTTPRouteRule{{BackendRefs: backends}},
		},
	}
}

func trafficSplit(ns, name, service string, backends ...gatewayv1.HTTPBackendRef) *meshv1alpha1.TrafficSplit {
	s := &meshv1alpha1.TrafficSplit{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: meshv1alpha1.TrafficSplitSpec{Service: service}}
	for _, b := range backends {
		s.Spec.Backends = append(s.Spec.Backends, b.BackendRef)
	}
	return s
}

func authzPolicy(ns, name, kind, target string) *meshv1alpha1.AuthorizationPolicy {
	return &meshv1alpha1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: meshv1alpha1.AuthorizationPolicySpec{
			TargetRef: gatewayv1.LocalPolicyTargetReference{Kind: gatewayv1.Kind(kind), Name: gatewayv1.ObjectName(target)},
			Action:    meshv1alpha1.ActionDeny,
		},
	}
}

func reconcileOnce(t *testing.T, r interface {
	Reconcile(context.Context, ctrl.Request) (ctrl.Result, error)
}, o client.Object) {
	t.Helper()
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(o)}); err != nil {
		t.Fatalf("reconciling %s: %v", o.GetName(), err)
	}
}

func get[T client.Object](t *testing.T, c client.Client, o T) T {
	t.Helper()
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(o), o); err != nil {
		t.Fatal(err)
	}
	return o
}

func findCondition(conds []metav1.Condition, typ string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}

// expect checks one condition: status, reason, the object's generation, and
// optionally a piece of the message.
func expect(t *testing.T, what string, conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason string, gen int64, msg string) {
	t.Helper()
	c := findCondition(conds, typ)
	switch {
	case c == nil:
		t.Errorf("%s: no %s condition in %+v", what, typ, conds)
	case c.Status != status || c.Reason != reason || c.ObservedGeneration != gen || !strings.Contains(c.Message, msg):
		t.Errorf("%s: %s = %s/%s gen %d %q; want %s/%s gen %d containing %q", what, typ, c.Status, c.Reason, c.ObservedGeneration, c.Message, status, reason, gen, msg)
	case c.LastTransitionTime.IsZero():
		t.Errorf("%s: %s has no lastTransitionTime", what, typ)
	}
}

// ourParents are the status.parents entries of our controller.
func ourParents(r *gatewayv1.HTTPRoute) []gatewayv1.RouteParentStatus {
	var out []gatewayv1.RouteParentStatus
	for _, p := range r.Status.Parents {
		if p.ControllerName == meshv1alpha1.ControllerName {
			out = append(out, p)
		}
	}
	return out
}

// eventually polls cond until it holds. The deadline only keeps a broken
// test from hanging; nothing is measured against it.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never happened; last state: %s", what, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// countingClient counts status writes: a no-op merge patch leaves the
// resourceVersion alone, so only counting shows whether one was sent.
func countingClient(t *testing.T) (client.Client, *atomic.Int64) {
	t.Helper()
	needEnv(t)
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Client.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	return interceptor.NewClient(wc, interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			n.Add(1)
			return c.SubResource(sub).Patch(ctx, obj, p, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			n.Add(1)
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
	}), &n
}
