package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rootlessMark is the socket mark that exempts the proxy from redirection
// when it cannot run as its own UID.
const rootlessMark = 0x2102

// asUser adapts a container to the user namespace the harness runs in.
// Without root (make demo on a laptop, see Main) that namespace maps only
// root: a container cannot become its runAsUser, and iptables refuses
// proxy-init's owner match on the proxy's UID. Such a container then runs
// as the namespace's root, and the proxy is exempted by a socket mark
// instead of its UID: proxy-init gets --proxy-uid=0 --proxy-mark, weft-proxy
// WEFT_SOCKET_MARK. Everything else about the mesh is unchanged. With root
// (CI), every UID is mapped and this returns its arguments as they are.
// mapped is netns.UIDMapped, or a stand-in in tests.
func asUser(mapped func(int) bool, bin string, uid int64, args, env []string) (int64, []string, []string) {
	unmapped := func(id int64) bool { return id != 0 && !mapped(int(id)) }
	proxy := filepath.Base(bin) == "weft-proxy"
	if proxy && len(args) > 0 && args[0] == "init" {
		out := make([]string, 0, len(args)+1)
		for _, a := range args {
			if v, ok := strings.CutPrefix(a, "--proxy-uid="); ok {
				if id, err := strconv.ParseInt(v, 10, 64); err == nil && unmapped(id) {
					out = append(out, "--proxy-uid=0", fmt.Sprintf("--proxy-mark=%#x", rootlessMark))
					continue
				}
			}
			out = append(out, a)
		}
		args = out
	}
	if unmapped(uid) {
		if proxy {
			env = append(env, fmt.Sprintf("WEFT_SOCKET_MARK=%#x", rootlessMark))
		}
		uid = 0
	}
	return uid, args, env
}

// userNSScript runs inside the new user, network and mount namespaces: a
// private /run lets `ip netns add` create its /run/netns, which the real
// root owns outside.
const userNSScript = `mount -t tmpfs -o mode=0755 weft-run /run && exec "$0" "$@"`

// userNSArgs is the unshare command line that runs the test binary as root
// of a new user namespace (mapping only the caller's UID, to 0) with its own
// network and mount namespaces. Network namespaces made inside belong to it,
// so the harness can add veth pairs and iptables rules there without any
// privilege outside. The new network namespace holds only a loopback, so
// nothing the run does can reach the machine's network either.
func userNSArgs(exe string, args []string) []string {
	return append([]string{"--user", "--map-root-user", "--net", "--mount", "--propagation", "private",
		"sh", "-c", userNSScript, exe}, args...)
}

// userNSUnsupported says what is missing to run the harness without root,
// or "". It tries the real thing: creating the namespaces and a network
// namespace inside, the step that distributions restricting unprivileged
// user namespaces refuse.
func userNSUnsupported() string {
	for _, tool := range []string{"unshare", "ip", "iptables-restore", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("%q in PATH (apt-get install -y iproute2 iptables util-linux)", tool)
		}
	}
	probe := "ip netns add weft-probe && ip netns exec weft-probe ip link set lo up"
	out, err := exec.Command("unshare", userNSArgs("sh", []string{"-c", probe})...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("root, or unprivileged user namespaces, which this machine refuses (%s: %v). "+
			"Enable them (Debian: sysctl kernel.unprivileged_userns_clone=1; Ubuntu 24.04 and later: "+
			"sysctl kernel.apparmor_restrict_unprivileged_userns=0; everywhere: user.max_user_namespaces > 0) "+
			"or run as root (sudo -E make demo)", strings.TrimSpace(string(out)), err)
	}
	return ""
}

// inUserNS runs the test binary again as root of a new user namespace (see
// userNSArgs) and returns its exit code. Interrupts are passed on, so that
// the tests inside stop what they started. The mounts and network
// namespaces the run made live in its private mount namespace and go with
// it; processes do not die with a user namespace, so every process the
// harness starts carries a parent-death signal, as on the root path.
func inUserNS() int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	who := "Not root: the whole mesh runs"
	if os.Geteuid() == 0 {
		who = "As for a user without root, the whole mesh runs"
	}
	fmt.Fprintln(os.Stderr, who+" in an unprivileged user namespace (only root is mapped there; the proxy is exempted from redirection by a socket mark instead of its UID).")
	cmd := exec.Command("unshare", userNSArgs(self, os.Args[1:])...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envUserNS+"=1")
	return runForwardingSignals(cmd)
}

// EnterNode is the command prefix that runs a command in the node's
// network namespace from another terminal of the same user: `ip netns exec`
// as root, and for an unprivileged run nsenter into its user and mount
// namespaces first, where the node's network namespace is named.
func EnterNode() string {
	node := os.Getenv(envNode)
	if pid := os.Getenv(envUserNSPID); pid != "" {
		return "nsenter -t " + pid + " -U -m --preserve-credentials ip netns exec " + node + " "
	}
	return "ip netns exec " + node + " "
}

// RunUnprivileged runs the tests of this test binary that match pattern
// again, from the start, the way they run for a user without root: in a new
// user namespace that maps only root, even when the caller is root. It
// returns their output, and fails t if they fail. It skips when the machine
// refuses unprivileged user namespaces, and when already in one.
func RunUnprivileged(t *testing.T, pattern string) string {
	t.Helper()
	if os.Getenv(envUserNS) != "" {
		t.Skip("already running in a user namespace")
	}
	if why := userNSUnsupported(); why != "" {
		t.Skip("needs " + why)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The nested run dies with this test binary (go test's timeout kills
	// it), and is interrupted first when the test's deadline is near.
	ctx := context.Background()
	if dl, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-30*time.Second))
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, self, "-test.run", pattern, "-test.v", "-test.count=1", "-test.timeout=10m")
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 20 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	for _, kv := range os.Environ() {
		// A fresh run: its own node, scratch directory and user namespace.
		if k, _, _ := strings.Cut(kv, "="); k != envNode && k != envScratch && k != envUserNSPID && k != envUserNS {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, envUserNS+"="+userNSForce)
	out, err := cmd.CombinedOutput()
	if err != nil {
		const keep = 32 << 10
		tail := out
		if len(tail) > keep {
			tail = tail[len(tail)-keep:]
		}
		t.Fatalf("the unprivileged run failed: %v\n...%s", err, tail)
	}
	return string(out)
}
