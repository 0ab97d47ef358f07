// Command mkcerts writes a throwaway mesh PKI for the benchmark: a root, an
// issuer and one SVID per identity given, as cert.pem/key.pem/bundle.pem in
// a directory per identity plus a combined PEM (chain and key) for haproxy.
// It is not for production use.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/weftmesh/weft/proxy/internal/testpki"
)

type fatal struct{}

func (fatal) Helper() {}
func (fatal) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, append([]any{"mkcerts:"}, args...)...)
	os.Exit(1)
}

func main() {
	dir := flag.String("dir", "certs", "output directory")
	flag.Parse()
	var tb fatal
	root := testpki.NewRoot(tb, "weft bench root")
	issuer := root.Intermediate(tb, "weft bench issuer")
	for _, name := range flag.Args() {
		d := filepath.Join(*dir, name)
		if err := os.MkdirAll(d, 0o700); err != nil {
			tb.Fatal(err)
		}
		f := issuer.Leaf(tb, "spiffe://cluster.local/ns/bench/sa/"+name, testpki.LeafOpts{}).Write(tb, d, root)
		cert, _ := os.ReadFile(f.Cert)
		key, _ := os.ReadFile(f.Key)
		if err := os.WriteFile(filepath.Join(d, "combined.pem"), append(cert, key...), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
}
