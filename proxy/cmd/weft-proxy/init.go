package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/weftmesh/weft/proxy/iptables"
)

// runInit is `weft-proxy init`, run by the proxy-init init container to
// program the pod's traffic redirection; the flags are those of
// iptables.ParseFlags. It returns the process exit code.
func runInit(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return iptables.Command(ctx, iptables.ExecRunner{}, args, os.Stdout, os.Stderr)
}
