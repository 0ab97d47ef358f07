package netns

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// Environment variables that carry a role into a re-executed test binary.
const (
	envRole = "WEFT_NETNS_ROLE"
	envUID  = "WEFT_NETNS_UID"
)

// Roles lets a test run its own Go code as a separate process inside a
// namespace, for what a goroutine cannot do (a different UID, a process that
// is killed). The test binary re-executes itself: call RunRole from TestMain
// before m.Run, and start roles with NS.Role.
//
//	func TestMain(m *testing.M) {
//		netns.RunRole(map[string]func(args []string) int{"dial": dialRole})
//		os.Exit(m.Run())
//	}
type Roles = map[string]func(args []string) int

// RunRole runs the role named by the environment, if any, and exits with its
// code; in the parent test process it returns at once.
func RunRole(roles Roles) {
	name, ok := os.LookupEnv(envRole)
	if !ok {
		return
	}
	fn, ok := roles[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "netns: unknown role %q\n", name)
		os.Exit(2)
	}
	if s := os.Getenv(envUID); s != "" {
		uid, err := strconv.Atoi(s)
		if err == nil {
			// Group first: after setuid we could no longer change it.
			// Since Go 1.16 these apply to every thread of the process.
			err = syscall.Setgroups(nil)
			if err == nil {
				err = syscall.Setgid(uid)
			}
			if err == nil {
				err = syscall.Setuid(uid)
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "netns: becoming UID %s: %v\n", s, err)
			os.Exit(3)
		}
	}
	os.Exit(fn(os.Args[1:]))
}

// Role returns a command that runs role (registered with RunRole) inside the
// namespace with args. With uid >= 0 the role drops to that UID and GID
// before running (inside `unshare -Ur` only mapped IDs work).
func (ns *NS) Role(role string, uid int, args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = "/proc/self/exe"
	}
	cmd := ns.Command(exe, args...)
	cmd.Env = append(os.Environ(), envRole+"="+role)
	if uid >= 0 {
		cmd.Env = append(cmd.Env, envUID+"="+strconv.Itoa(uid))
	}
	return cmd
}

// UIDMapped reports whether uid exists in the current user namespace. Inside
// `unshare -Ur` only root is mapped, so a role cannot become another UID and
// iptables rejects an owner match on an unmapped UID; callers skip then.
func UIDMapped(uid int) bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return uid == os.Getuid()
	}
	for _, line := range strings.Split(string(b), "\n") {
		var inside, outside, n int
		if _, err := fmt.Sscan(line, &inside, &outside, &n); err == nil && uid >= inside && uid < inside+n {
			return true
		}
	}
	return false
}
