// Package version carries the build's version, set at link time with
// -ldflags "-X github.com/weftmesh/weft/internal/version.Version=v0.1.0". It is
// also the version the operator installs when a MeshControlPlane asks for it.
package version

import "runtime"

// Version of this build.
var Version = "v0.1.0"

// String describes the build for --version output.
func String() string {
	return "weft " + Version + " (" + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")"
}
