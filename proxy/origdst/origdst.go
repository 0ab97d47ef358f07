// Package origdst recovers the destination a connection was addressed to
// before an iptables REDIRECT sent it to the proxy (SO_ORIGINAL_DST, IPv4 and
// IPv6). It must not guess: without conntrack state it returns an error and
// the caller falls back to its static configuration.
package origdst

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST (linux/netfilter_ipv4.h) and
// IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h); both are 80.
const soOriginalDst = 80

// Get returns the original destination of c.
func Get(c *net.TCPConn) (netip.AddrPort, error) {
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("local address %v is not TCP", c.LocalAddr())
	}
	v4 := local.IP.To4() != nil
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var (
		buf  [28]byte // sockaddr_in6 is the larger of the two
		serr error
	)
	err = rc.Control(func(fd uintptr) {
		level, size := unix.SOL_IPV6, uint32(28)
		if v4 {
			level, size = unix.SOL_IP, 16
		}
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), soOriginalDst,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		if e != 0 {
			serr = e
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST: %w", err)
	}
	return parse(buf[:], v4)
}

// parse decodes a sockaddr_in or sockaddr_in6 (family in host order, port in
// network order).
func parse(b []byte, v4 bool) (netip.AddrPort, error) {
	port := binary.BigEndian.Uint16(b[2:4])
	if v4 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), nil
	}
	return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), port), nil
}
