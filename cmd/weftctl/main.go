// Command weftctl checks, diagnoses and helps operate a Weft mesh:
//
//	weftctl check                   is the mesh healthy? one ✓/✗ line per check
//	weftctl inject -f FILE          inject proxies into manifests offline (GitOps)
//	weftctl diag proxy POD -n NS    a proxy's snapshot and identity
//	weftctl version                 client, operator, control plane and proxy versions
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/scheme"
)

const usage = `weftctl checks, diagnoses and helps operate a Weft mesh.

Usage:
  weftctl check [--mesh NAME]                  one line per check; exit 1 if any fails
  weftctl inject -f FILE|- [flags]             inject the proxy into manifests offline
  weftctl diag proxy POD [-n NAMESPACE]        show a proxy's snapshot and identity
  weftctl version                              client, operator, control plane, proxies

Global flags (before or after the command):
  --kubeconfig PATH   kubeconfig (default: $KUBECONFIG or ~/.kube/config)
  --context NAME      kubeconfig context
`

// errFailed makes the process exit 1 without printing more: the command has
// already said what failed.
var errFailed = errors.New("failed")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, errFailed):
		os.Exit(1)
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	default:
		fmt.Fprintln(os.Stderr, "weftctl:", err)
		os.Exit(2)
	}
}

// cluster is how a command reaches the API server; tests set it directly.
type cluster struct {
	cfg    *rest.Config
	client client.Client
	kube   kubernetes.Interface
}

func connect(kubeconfig, kubeContext string) (*cluster, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	return newCluster(cfg)
}

func newCluster(cfg *rest.Config) (*cluster, error) {
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		return nil, err
	}
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &cluster{cfg: cfg, client: c, kube: k}, nil
}

// run parses the command line. connectFn is replaced by tests.
var connectFn = connect

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("weftctl "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file")
	kubeContext := fs.String("context", "", "kubeconfig context")
	cl := func() (*cluster, error) { return connectFn(*kubeconfig, *kubeContext) }
	switch cmd {
	case "check":
		mesh := fs.String("mesh", "", "MeshControlPlane name (default: the only one)")
		if err := fs.Parse(rest); err != nil {
			return err
		}
		c, err := cl()
		if err != nil {
			return err
		}
		return runCheck(ctx, c, *mesh, stdout)
	case "inject":
		o := injectOptions{}
		o.register(fs)
		if err := fs.Parse(rest); err != nil {
			return err
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		return runInject(o, set, stdin, stdout, stderr)
	case "diag":
		ns := fs.String("n", "default", "namespace of the pod")
		fs.StringVar(ns, "namespace", "default", "namespace of the pod")
		port := fs.Int("admin-port", 4191, "the proxy's admin port")
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() != 2 || fs.Arg(0) != "proxy" {
			return fmt.Errorf("usage: weftctl diag proxy POD [-n NAMESPACE]")
		}
		c, err := cl()
		if err != nil {
			return err
		}
		return runDiag(ctx, c, *ns, fs.Arg(1), *port, stdout)
	case "version":
		if err := fs.Parse(rest); err != nil {
			return err
		}
		c, err := cl()
		if err != nil {
			// The client version is still useful without a cluster.
			fmt.Fprintf(stdout, "client: %s\n", clientVersion())
			return err
		}
		return runVersion(ctx, c, stdout)
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}
