package upstream

import (
	"net/http"
	"testing"

	"github.com/weftmesh/weft/proxy/identity"
)

func TestParseMeshProtocol(t *testing.T) {
	for in, want := range map[string]MeshProtocol{"": MeshAuto, "auto": MeshAuto, "h2": MeshH2, "h1": MeshH1, "H2": "", "http/1.1": "", "h2c": ""} {
		got, err := ParseMeshProtocol(in)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("ParseMeshProtocol(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestMeshALPN: which protocol a request takes to a peer proxy.
func TestMeshALPN(t *testing.T) {
	req := func(major int, upgrade bool) *http.Request {
		r, _ := http.NewRequest("GET", "http://svc/", nil)
		r.ProtoMajor = major
		if upgrade {
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
		}
		return r
	}
	const h1, h2 = identity.ALPNH1, identity.ALPNH2
	for _, tc := range []struct {
		mesh    MeshProtocol
		major   int
		upgrade bool
		want    string
	}{
		{MeshAuto, 1, false, h1},
		{MeshAuto, 2, false, h2},
		{MeshAuto, 1, true, h1},
		{MeshH2, 1, false, h2},
		{MeshH2, 2, false, h2},
		{MeshH2, 1, true, h1},
		{MeshH1, 1, false, h1},
		{MeshH1, 2, false, h1},
		{"", 1, false, h1}, // New's default is auto
		{"", 2, false, h2},
	} {
		p := New(Options{Mesh: tc.mesh})
		if got := p.meshALPN(req(tc.major, tc.upgrade)); got != tc.want {
			t.Errorf("mesh %q, HTTP/%d, upgrade %v: %s, want %s", tc.mesh, tc.major, tc.upgrade, got, tc.want)
		}
	}
}
