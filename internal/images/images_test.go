package images

import (
	"errors"
	"testing"
)

func TestFor(t *testing.T) {
	tests := []struct {
		name, version, registry string
		want                    Set
		wantErr                 bool
	}{
		{name: "default registry", version: "v1.1.0", want: Set{
			Version: "v1.1.0", Revision: "v1-1-0",
			ControlPlane: "ghcr.io/weftmesh/weft-controlplane:v1.1.0",
			Proxy:        "ghcr.io/weftmesh/weft-proxy:v1.1.0",
		}},
		{name: "mirror", version: "v1.0.0", registry: "registry.example.com/weft", want: Set{
			Version: "v1.0.0", Revision: "v1-0-0",
			ControlPlane: "registry.example.com/weft/weft-controlplane:v1.0.0",
			Proxy:        "registry.example.com/weft/weft-proxy:v1.0.0",
		}},
		{name: "unknown version", version: "v9.9.9", wantErr: true},
		{name: "not a version", version: "latest", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := For(tt.version, tt.registry)
			if tt.wantErr {
				var uv *UnknownVersionError
				if !errors.As(err, &uv) {
					t.Fatalf("For(%q) error = %v, want UnknownVersionError", tt.version, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("For(%q, %q) = %+v, want %+v", tt.version, tt.registry, got, tt.want)
			}
		})
	}
}

func TestRevision(t *testing.T) {
	if got := Revision("v1.2.3"); got != "v1-2-3" {
		t.Errorf("Revision(v1.2.3) = %q", got)
	}
}
