// Package images maps a Weft version onto the container images the operator
// deploys for it, and onto the revision name that tells side-by-side control
// planes apart. It is a table compiled into the operator: a version the table
// does not hold is refused, never guessed, so a typo in spec.version cannot
// roll a cluster onto an image that does not exist.
package images

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/weftmesh/weft/internal/version"
)

// DefaultRegistry hosts the released images.
const DefaultRegistry = "ghcr.io/weftmesh"

// Image names, without registry or tag.
const (
	ControlPlaneName = "weft-controlplane"
	ProxyName        = "weft-proxy"
)

// released lists the versions this operator can install. The operator's own
// build version is always known (see Known).
var released = []string{
	"v1.0.0",
	"v1.1.0",
	"v1.2.0",
}

var semver = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$`)

// Set is the images of one version.
type Set struct {
	Version      string
	Revision     string
	ControlPlane string
	Proxy        string
}

// Known lists the versions the operator can install, sorted.
func Known() []string {
	out := slices.Clone(released)
	if !slices.Contains(out, version.Version) && semver.MatchString(version.Version) {
		out = append(out, version.Version)
	}
	slices.Sort(out)
	return out
}

// Revision names the control-plane revision of a version: v1.2.3 → v1-2-3,
// a DNS label usable in object names and label values.
func Revision(v string) string {
	return strings.ReplaceAll(v, ".", "-")
}

// UnknownVersionError says that the operator has no images for a version.
type UnknownVersionError struct {
	Version string
}

func (e *UnknownVersionError) Error() string {
	return fmt.Sprintf("version %q is not one this operator can install (known: %s); upgrade the operator first or pick a known version",
		e.Version, strings.Join(Known(), ", "))
}

// For returns the images of version v from registry (DefaultRegistry when
// empty), or an *UnknownVersionError.
func For(v, registry string) (Set, error) {
	if !semver.MatchString(v) || !slices.Contains(Known(), v) {
		return Set{}, &UnknownVersionError{Version: v}
	}
	if registry == "" {
		registry = DefaultRegistry
	}
	registry = strings.TrimSuffix(registry, "/")
	return Set{
		Version:      v,
		Revision:     Revision(v),
		ControlPlane: registry + "/" + ControlPlaneName + ":" + v,
		Proxy:        registry + "/" + ProxyName + ":" + v,
	}, nil
}
