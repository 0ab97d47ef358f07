// Package sockmark marks the proxy's own outgoing connections with a Linux
// socket mark (SO_MARK). proxy-init's --proxy-mark exempts marked
// connections from redirection; it is the alternative to exempting the
// proxy's UID where that UID cannot exist, such as an unprivileged user
// namespace that maps only root.
//
// It must not be used in a Kubernetes pod: setting a mark needs CAP_NET_ADMIN,
// or only CAP_NET_RAW since Linux 5.17, which is in the default capability
// set of every container. Any application container could then mark its own
// connections and leave the mesh (no mTLS, no policy). A UID cannot be
// taken that way, so the UID is the exemption the injector programs, and it
// never passes --proxy-mark (controlplane/inject tests this).
package sockmark

import (
	"fmt"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Parse reads a mark given in decimal or as 0x-prefixed hex. "" is 0 (no
// mark).
func Parse(s string) (uint32, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("socket mark %q: want a number up to 0xffffffff, decimal or 0x-hex", s)
	}
	return uint32(v), nil
}

// Control returns a net.Dialer Control function that sets mark on every
// socket before it connects, or nil when mark is 0.
func Control(mark uint32) func(network, address string, c syscall.RawConn) error {
	if mark == 0 {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("setting socket mark %#x (needs CAP_NET_ADMIN, or CAP_NET_RAW on Linux 5.17 and later): %w", mark, serr)
		}
		return nil
	}
}
