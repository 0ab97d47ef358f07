// Package sockmark marks the proxy's own outgoing connections with a Linux
// socket mark (SO_MARK). proxy-init's --proxy-mark exempts marked
// connections from redirection; it is the alternative to exempting the
// proxy's UID where that UID cannot exist, such as an unprivileged user
// namespace that maps only root. Setting a mark needs CAP_NET_ADMIN in the
// pod's network namespace, which a proxy in a Kubernetes pod does not have,
// so the UID stays the default.
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
			return fmt.Errorf("setting socket mark %#x (needs CAP_NET_ADMIN): %w", mark, serr)
		}
		return nil
	}
}
