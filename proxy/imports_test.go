package proxy

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoKubernetesImports keeps the sidecar small and independent of the
// cluster libraries: nothing under proxy/ may depend on k8s.io, even
// transitively.
func TestNoKubernetesImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-test", "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "k8s.io/") || strings.HasPrefix(p, "sigs.k8s.io/") {
			t.Errorf("proxy depends on %s", p)
		}
	}
}
