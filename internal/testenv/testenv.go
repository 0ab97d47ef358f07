// Package testenv starts a real kube-apiserver and etcd for tests (through
// controller-runtime's envtest) with Weft's CRDs and the CRDs of the APIs Weft
// consumes (Gateway API, cert-manager) installed.
//
// The binaries are built by `make envtest-assets` into bin/k8s/<version>; the
// Makefile exports KUBEBUILDER_ASSETS. Tests are never faked when the binaries
// are missing: under CI they fail, elsewhere they skip and say how to build them.
// Only tests import this package.
package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/weftmesh/weft/internal/scheme"
)

// KubernetesVersion is the version of the API server the tests run against; it
// matches the k8s.io libraries in go.mod and K8S_VERSION in the Makefile.
const KubernetesVersion = "1.37.2"

// Options choose what is installed besides Weft's own CRDs.
type Options struct {
	// GatewayAPI installs the Gateway API CRDs (experimental channel, a
	// superset of standard, so HTTPRoute retries are available).
	GatewayAPI bool
	// CertManager installs cert-manager's CRDs.
	CertManager bool
	// Webhooks are served from the test process and registered with the API
	// server (see envtest.WebhookInstallOptions).
	Webhooks *envtest.WebhookInstallOptions
	// APIServerFlags are extra kube-apiserver flags.
	APIServerFlags map[string]string
	// APIServerAddress is the address the API server listens on and has in
	// its serving certificate (default 127.0.0.1). The end-to-end harness
	// uses an address its network-namespace "pods" can reach.
	APIServerAddress string
}

// Env is a running API server.
type Env struct {
	Config *rest.Config
	Client client.Client
	env    *envtest.Environment
}

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// AssetsDir finds the kube-apiserver and etcd binaries, or says how to build
// them.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = filepath.Join(RepoRoot(), "bin", "k8s", KubernetesVersion)
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("%s not found in %s: run `make envtest-assets` (or `make test`) to build it", b, dir)
		}
	}
	return dir, nil
}

// Start starts an API server for the tests of one package; call it from
// TestMain and Stop it there. It returns an error rather than failing, since
// TestMain has no *testing.T.
func Start(opts Options) (*Env, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	paths := []string{filepath.Join(RepoRoot(), "config", "crd", "bases")}
	if opts.GatewayAPI {
		dir, err := moduleDir("sigs.k8s.io/gateway-api")
		if err != nil {
			return nil, err
		}
		paths = append(paths, filepath.Join(dir, "config", "crd", "experimental"))
	}
	if opts.CertManager {
		dir, err := moduleDir("github.com/cert-manager/cert-manager")
		if err != nil {
			return nil, err
		}
		paths = append(paths, filepath.Join(dir, "deploy", "crds"))
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     paths,
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme.New(),
	}
	if opts.Webhooks != nil {
		env.WebhookInstallOptions = *opts.Webhooks
	}
	if opts.APIServerAddress != "" {
		// envtest picks a loopback address unless given both address and
		// port; the port is found free on that address.
		ln, err := net.Listen("tcp", net.JoinHostPort(opts.APIServerAddress, "0"))
		if err != nil {
			return nil, fmt.Errorf("API server address %s: %w", opts.APIServerAddress, err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		listen := &env.ControlPlane.GetAPIServer().SecureServing.ListenAddr
		listen.Address, listen.Port = opts.APIServerAddress, strconv.Itoa(port)
	}
	if len(opts.APIServerFlags) > 0 {
		args := env.ControlPlane.GetAPIServer().Configure()
		for k, v := range opts.APIServerFlags {
			args.Set(k, v)
		}
	}
	cfg, err := env.Start()
	if err != nil {
		// Start can fail after the processes are up (a CRD that does not
		// install): stop them so no API server outlives the test binary.
		_ = env.Stop()
		return nil, fmt.Errorf("starting the local API server: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	return &Env{Config: cfg, Client: c, env: env}, nil
}

// Stop stops the API server and etcd.
func (e *Env) Stop() error {
	if e == nil {
		return nil
	}
	return e.env.Stop()
}

// Environment exposes the underlying envtest environment (webhook options,
// control plane processes).
func (e *Env) Environment() *envtest.Environment { return e.env }

// Main runs a package's tests against one API server: the usual body of a
// TestMain. When the binaries are missing it fails under CI (CI set) and
// otherwise skips the package with the reason.
func Main(m *testing.M, opts Options, started func(*Env)) int {
	if _, err := AssetsDir(); err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			return 1
		}
		fmt.Fprintln(os.Stderr, "SKIP: these tests need a local API server:", err)
		return 0
	}
	env, err := Start(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the API server:", err)
		}
	}()
	if started != nil {
		started(env)
	}
	return m.Run()
}

var (
	modDirs   sync.Map
	goCommand = "go"
)

// moduleDir is where the Go module cache holds a module of our go.mod, so the
// CRDs it ships install at exactly the version we compile against.
func moduleDir(path string) (string, error) {
	if v, ok := modDirs.Load(path); ok {
		return v.(string), nil
	}
	cmd := exec.Command(goCommand, "list", "-m", "-f", "{{.Dir}}", path)
	cmd.Dir = RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("locating module %s: %w", path, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("module %s is not downloaded: run `go mod download`", path)
	}
	modDirs.Store(path, dir)
	return dir, nil
}

// GVK is a shorthand for tests.
func GVK(group, version, kind string) schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: group, Version: version, Kind: kind}
}
