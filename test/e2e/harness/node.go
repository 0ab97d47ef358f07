// Package harness runs a whole Weft mesh on one machine for the end-to-end
// tests and `make demo`: etcd, kube-apiserver and kube-controller-manager
// built from this repository's pinned versions, the operator and the control
// plane as real processes, and "pods" that are network namespaces running
// real binaries (the application, proxy-init, weft-proxy), started by a small
// kubelet of our own from the Pod objects the API server holds, so the
// webhook, the ReplicaSet controller and EndpointSlices are all real.
//
// Everything runs inside one network namespace, the "node", entered by
// re-executing the test binary in it (Main). Pods are namespaces linked to
// the node by veth pairs; Service ClusterIPs are DNATed in the node by a
// small kube-proxy. No packet can leave the node namespace, and deleting it
// at the end removes every interface and rule the run made.
package harness

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// NodeIP is the node's own address, on its loopback, reachable from every
// pod through its default route. The API server listens on it.
const NodeIP = "10.244.0.1"

const (
	envNode    = "WEFT_E2E_NODE"
	envScratch = "WEFT_E2E_SCRATCH"
	envUserNS  = "WEFT_E2E_USERNS"
	// envUserNSPID is the PID of a process in the user and mount
	// namespaces of an unprivileged run, for EnterNode.
	envUserNSPID = "WEFT_E2E_USERNS_PID"
	// userNSForce as envUserNS takes the unprivileged path even as root
	// (RunUnprivileged).
	userNSForce = "force"
)

// Main is the body of an end-to-end package's TestMain. Outside the node
// namespace it creates one, re-runs the test binary inside it and removes it
// (and every pod namespace made under its name) afterwards, whatever
// happened. Inside, it runs the tests.
func Main(m *testing.M) int {
	if os.Getenv(envNode) != "" {
		return m.Run()
	}
	if userNS := os.Getenv(envUserNS); (os.Geteuid() != 0 && userNS == "") || userNS == userNSForce {
		if why := userNSUnsupported(); why != "" {
			return cannotRun(why)
		}
		return inUserNS()
	}
	if why := unsupported(); why != "" {
		return cannotRun(why)
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	node := "weft-e2e-" + hex.EncodeToString(b[:])
	defer cleanupNode(node)
	if err := setupNode(node); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: setting up the node namespace:", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", node, self}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The scratch directory belongs to this process, so it is removed even
	// when the tests inside time out and panic.
	scratch, err := os.MkdirTemp("", "weft-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer os.RemoveAll(scratch)
	cmd.Env = append(os.Environ(), envNode+"="+node, envScratch+"="+scratch)
	if os.Getenv(envUserNS) != "" {
		cmd.Env = append(cmd.Env, envUserNSPID+"="+strconv.Itoa(os.Getpid()))
	}
	return runForwardingSignals(cmd)
}

// runForwardingSignals runs cmd to its end and returns its exit code.
// Ctrl-C (make demo) and go test's interrupt must reach the tests inside,
// which stop everything they started; the caller then removes the
// namespaces. Dying on the signal here would kill the inside before its
// cleanup and leave the namespaces behind.
func runForwardingSignals(cmd *exec.Cmd) int {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	if err := cmd.Wait(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	return 0
}

// cannotRun reports that the whole mesh cannot run here: a failure in CI
// and for make demo, a skip for a developer's `go test ./...`.
func cannotRun(why string) int {
	if os.Getenv("CI") != "" || os.Getenv("WEFT_DEMO") == "1" {
		fmt.Fprintln(os.Stderr, "FAIL: the whole mesh cannot run here: it needs", why)
		return 1
	}
	fmt.Fprintln(os.Stderr, "SKIP: the end-to-end tests need", why)
	return 0
}

// unsupported says what is missing to run the harness, or "".
func unsupported() string {
	if os.Geteuid() != 0 {
		return "root in its user namespace"
	}
	for _, tool := range []string{"ip", "iptables-restore", "mount", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("%q in PATH (apt-get install -y iproute2 iptables util-linux)", tool)
		}
	}
	return ""
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func setupNode(node string) error {
	if err := run("ip", "netns", "add", node); err != nil {
		return err
	}
	in := func(args ...string) error { return run("ip", append([]string{"netns", "exec", node}, args...)...) }
	for _, step := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", NodeIP + "/32", "dev", "lo"},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		// A route for the Service range (envtest's 10.0.0.0/24), so that
		// the node's own connections to a ClusterIP reach the nat OUTPUT
		// hook, where kube-proxy's DNAT rewrites them to an endpoint.
		{"ip", "route", "add", "10.0.0.0/24", "dev", "lo"},
	} {
		if err := in(step...); err != nil {
			return err
		}
	}
	return nil
}

// cleanupNode kills whatever still runs in the node and pod namespaces and
// deletes them.
func cleanupNode(node string) {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		name := e.Name()
		if name != node && !strings.HasPrefix(name, node+"-") {
			continue
		}
		if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
			for _, pid := range strings.Fields(string(out)) {
				_ = run("kill", "-9", pid)
			}
		}
		_ = run("ip", "netns", "delete", name)
	}
	_ = os.RemoveAll(filepath.Join("/etc/netns", node))
}

// nodeName is the node namespace this process runs in.
func nodeName() string { return os.Getenv(envNode) }
