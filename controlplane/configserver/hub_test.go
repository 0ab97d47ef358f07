package configserver

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestSameForMeshIgnoresRouteStatus(t *testing.T) {
	old := route("front", "r", "shop", "backend", 90, 10)
	old.Generation = 3
	status := old.DeepCopy()
	status.Status.Parents = []gatewayv1.RouteParentStatus{{ControllerName: "weft.dev/mesh"}}
	spec := old.DeepCopy()
	spec.Generation = 4
	label := old.DeepCopy()
	label.Labels = map[string]string{"a": "b"}
	deleting := old.DeepCopy()
	deleting.DeletionTimestamp = &metav1.Time{}
	for name, tc := range map[string]struct {
		n    *gatewayv1.HTTPRoute
		same bool
	}{
		"status only": {status, true},
		"spec":        {spec, false},
		"labels":      {label, false},
		"deleting":    {deleting, false},
	} {
		if got := sameForMesh(old, tc.n); got != tc.same {
			t.Errorf("%s: sameForMesh = %v, want %v", name, got, tc.same)
		}
	}
	// Without a generation nothing is known: recompile.
	noGen := old.DeepCopy()
	noGen.Generation = 0
	if sameForMesh(noGen, noGen.DeepCopy()) {
		t.Errorf("an object without a generation was taken as unchanged")
	}
}
