// Package netns builds throwaway network namespaces for tests: namespaces
// joined by veth pairs with addresses of the test's choosing, commands and
// processes run inside them, and Go code run inside them from the test
// process. Everything it creates is removed in t.Cleanup, also when the test
// fails.
//
// It needs what `ip netns` needs and nothing more: root, or an unprivileged
// user inside `unshare -Urnm` with a tmpfs on /run. It must never touch the
// host's own network namespace beyond creating and deleting namespaces, and
// tests must only send traffic to addresses that exist inside the namespaces
// they made (for example 10.244.0.0/16) or to loopback. Dial such addresses
// only from inside a namespace (NS.Do, NS.Command, NS.Role): from the host's
// own namespace they are routed to the real network.
package netns

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Skip skips the test unless namespaces can be made here, with a message that
// says what is missing. Call it (New does) before anything else.
func Skip(t testing.TB, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (or run inside `unshare -Urnm` with a tmpfs on /run) to create network namespaces")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %q in PATH (apt-get install -y iproute2 iptables): %v", tool, err)
		}
	}
}

// NS is a named network namespace (as `ip netns` knows it).
type NS struct {
	Name string
	t    testing.TB

	mu    sync.Mutex
	links int
}

// New creates a namespace with loopback up and deletes it at cleanup. The
// name is made unique (it gets a random suffix) so that tests running at the
// same time on a shared machine do not collide; use NS.Name to refer to it.
func New(t testing.TB, name string) *NS {
	t.Helper()
	Skip(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	ns := &NS{Name: fmt.Sprintf("weft-%s-%s", name, hex.EncodeToString(b[:])), t: t}
	if out, err := exec.Command("ip", "netns", "add", ns.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns.Name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", ns.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", ns.Name, err, out)
		}
	})
	ns.MustExec("ip", "link", "set", "lo", "up")
	// Without duplicate address detection, interfaces made later are usable
	// at once instead of after a second or two of tentative link-local
	// addresses. Errors are ignored: the kernel may have no IPv6.
	_, _ = ns.Exec("sh", "-c", "for f in all default; do echo 0 > /proc/sys/net/ipv6/conf/$f/accept_dad; done")
	return ns
}

// Command returns a command that runs name inside the namespace. It is not
// started; the caller owns it (see Start for a process killed at cleanup).
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Exec runs a command inside the namespace and returns its combined output.
func (ns *NS) Exec(name string, args ...string) (string, error) {
	out, err := ns.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s %s: %w: %s", ns.Name, name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// MustExec is Exec that fails the test on error.
func (ns *NS) MustExec(name string, args ...string) string {
	ns.t.Helper()
	out, err := ns.Exec(name, args...)
	if err != nil {
		ns.t.Fatal(err)
	}
	return out
}

// Do runs fn on an OS thread that has joined the namespace. Sockets created
// by fn (net.Listen, net.Dial) stay in the namespace and may be used from any
// goroutine afterwards; goroutines that fn starts do NOT run in it. The thread
// is thrown away afterwards rather than switched back, so a failure can never
// leave another goroutine in the wrong namespace.
func (ns *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime ends a locked thread with its goroutine.
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/run/netns", ns.Name))
		if err != nil {
			errc <- fmt.Errorf("opening namespace %s: %w", ns.Name, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("joining namespace %s: %w", ns.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Link connects a and b with a veth pair and gives each end its address (a
// prefix such as "10.244.1.2/24" or "fd00:244::2/64"; IPv6 addresses skip
// duplicate address detection so they are usable at once). The interfaces
// are named eth0, eth1, ... in the order links are made in each namespace;
// their names are returned. They disappear with the namespaces.
func Link(t testing.TB, a *NS, addrA string, b *NS, addrB string) (ifA, ifB string) {
	t.Helper()
	pa, err := netip.ParsePrefix(addrA)
	if err != nil {
		t.Fatalf("address %q: %v", addrA, err)
	}
	pb, err := netip.ParsePrefix(addrB)
	if err != nil {
		t.Fatalf("address %q: %v", addrB, err)
	}
	ifA, ifB = a.nextIf(), b.nextIf()
	if a == b {
		t.Fatalf("Link needs two different namespaces")
	}
	// The netns arguments create each end directly inside its namespace, so
	// names like eth0 never clash with the host's interfaces.
	if out, err := exec.Command("ip", "link", "add", ifA, "netns", a.Name, "type", "veth",
		"peer", "name", ifB, "netns", b.Name).CombinedOutput(); err != nil {
		t.Fatalf("creating veth %s/%s <-> %s/%s: %v: %s", a.Name, ifA, b.Name, ifB, err, out)
	}
	for _, end := range []struct {
		ns   *NS
		dev  string
		addr netip.Prefix
	}{{a, ifA, pa}, {b, ifB, pb}} {
		args := []string{"addr", "add", end.addr.String(), "dev", end.dev}
		if end.addr.Addr().Is6() {
			args = append(args, "nodad")
		}
		end.ns.MustExec("ip", args...)
		end.ns.MustExec("ip", "link", "set", end.dev, "up")
	}
	return ifA, ifB
}

func (ns *NS) nextIf() string {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	name := fmt.Sprintf("eth%d", ns.links)
	ns.links++
	return name
}

// Process is a command started in a namespace by Start.
type Process struct {
	Cmd    *exec.Cmd
	Stdout *syncBuffer
	Stderr *syncBuffer
	done   chan struct{}
	err    error
}

// Start starts cmd (typically from NS.Command or NS.Role) in its own process
// group and kills the whole group at cleanup, before the namespace is deleted
// (a live process would otherwise keep the namespace alive). Output is
// captured and logged at cleanup when the test failed.
func Start(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{Cmd: cmd, Stdout: &syncBuffer{}, Stderr: &syncBuffer{}, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p.Stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.Stderr
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// Also dies if the test binary is killed before cleanup runs. (The
	// signal follows the forking OS thread; Go only ends threads that a
	// goroutine locked, and Start must not be called from such a one, e.g.
	// from inside NS.Do.)
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", cmd, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("%s\nstdout:\n%s\nstderr:\n%s", cmd, p.Stdout, p.Stderr)
		}
	})
	return p
}

// Wait waits for the process to exit and returns its error.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// syncBuffer is a bytes.Buffer safe for a writer and a concurrent reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
