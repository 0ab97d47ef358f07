package compiler

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/scheme"
)

// TestLoadWithoutGatewayAPI: a cluster without Gateway API's CRDs has no
// HTTPRoutes; that is not an error, and TrafficSplits still compile. Any
// other List failure is.
func TestLoadWithoutGatewayAPI(t *testing.T) {
	noRoutes := func(err error) client.Client {
		return interceptor.NewClient(
			fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(
				split("shop", "canary", "web", 1, 0, nil, backendRef("web", 80, 1)),
			).Build(),
			interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, l client.ObjectList, opts ...client.ListOption) error {
				if _, ok := l.(*gatewayv1.HTTPRouteList); ok {
					return err
				}
				return c.List(ctx, l, opts...)
			}})
	}
	noMatch := &apimeta.NoKindMatchError{GroupKind: schema.GroupKind{Group: gatewayv1.GroupName, Kind: "HTTPRoute"}, SearchedVersions: []string{"v1"}}
	ctx := context.Background()
	for name, load := range map[string]func(client.Reader) (*World, error){
		"Load":                    func(r client.Reader) (*World, error) { return Load(ctx, r, Mesh{}) },
		"LoadForStatus":           func(r client.Reader) (*World, error) { return LoadForStatus(ctx, r) },
		"LoadForStatus namespace": func(r client.Reader) (*World, error) { return LoadForStatus(ctx, r, "shop") },
	} {
		w, err := load(noRoutes(noMatch))
		if err != nil {
			t.Errorf("%s without the HTTPRoute CRD: %v", name, err)
		} else if len(w.Routes) != 0 || len(w.Splits) != 1 {
			t.Errorf("%s: %d routes, %d splits", name, len(w.Routes), len(w.Splits))
		} else if c := w.SplitConditions(w.Splits[0]); c[0].Reason != meshv1alpha1.ReasonServiceNotFound {
			t.Errorf("%s: split Accepted reason %s", name, c[0].Reason)
		}
		boom := errors.New("etcd is on fire")
		if _, err := load(noRoutes(boom)); !errors.Is(err, boom) {
			t.Errorf("%s hid a real List error: %v", name, err)
		}
	}
}

func TestServiceKeysOrder(t *testing.T) {
	// The order of "namespace/name": "a-x/…" sorts before "a/…" because
	// '-' < '/', though "a" < "a-x".
	m := map[key]*corev1.Service{}
	for _, k := range []key{{"a", "z"}, {"a-x", "b"}, {"a", "b"}, {"ab", "a"}, {"a.b", "c"}, {"b", "a"}, {"a", "b-c"}} {
		m[k] = &corev1.Service{}
	}
	got := sortedKeys(m)
	want := make([]key, 0, len(m))
	for k := range m {
		want = append(want, k)
	}
	slices.SortFunc(want, func(a, b key) int { return strings.Compare(a.String(), b.String()) })
	if !slices.Equal(got, want) {
		t.Errorf("sortedKeys = %v, want %v", got, want)
	}
}
