package e2e

import (
	"strings"
	"testing"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// TestUnprivileged runs the mutual-TLS scenario the way `make demo` and
// these tests run for a developer without sudo: in a user namespace that
// maps only root, where containers cannot take their own UIDs and
// proxy-init exempts the proxy by socket mark instead. As root (CI) it
// forces that path; as another user the whole package already runs so.
func TestUnprivileged(t *testing.T) {
	out := harness.RunUnprivileged(t, "^TestMesh$/^MutualTLS$")
	for _, want := range []string{"the whole mesh runs in an unprivileged user namespace", "--- PASS: TestMesh/MutualTLS"} {
		if !strings.Contains(out, want) {
			t.Errorf("the unprivileged run's output lacks %q:\n%s", want, out)
		}
	}
}
