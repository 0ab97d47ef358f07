// Command etcd is the upstream etcd server (Debian's is too old for the API
// server we test against).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
