// Command bundle regenerates Weft's OLM bundle: `make bundle`.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/weftmesh/weft/internal/bundle"
)

func main() {
	var o bundle.Options
	var channels string
	flag.StringVar(&o.Root, "root", ".", "repository root")
	flag.StringVar(&o.Version, "version", "", "operator version, semver without a leading v")
	flag.StringVar(&o.Registry, "registry", "ghcr.io/weftmesh", "image registry")
	flag.StringVar(&channels, "channels", "stable,candidate", "channels, the default first")
	flag.StringVar(&o.Replaces, "replaces", "", "CSV this version replaces (weft.vX.Y.Z)")
	flag.StringVar(&o.SkipRange, "skip-range", "", "olm.skipRange, e.g. '>=0.0.0 <0.1.0'")
	flag.Parse()
	o.Channels = strings.Split(channels, ",")
	files, err := bundle.Generate(o)
	if err == nil {
		err = bundle.Write(o.Root, files)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bundle:", err)
		os.Exit(1)
	}
}
