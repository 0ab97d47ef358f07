package iptables

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Defaults shared with the injector; they must match the proxy's listeners.
const (
	DefaultInboundPort  = 4143
	DefaultOutboundPort = 4140
	DefaultAdminPort    = 4191
	DefaultProxyUID     = 2102
)

// PortRange is an inclusive range of TCP ports; a single port has Lo == Hi.
type PortRange struct {
	Lo, Hi uint16
}

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// iptablesArg renders the range the way `--dport` expects it.
func (r PortRange) iptablesArg() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d:%d", r.Lo, r.Hi)
}

// Config is everything that decides which rules are programmed.
type Config struct {
	InboundPort  uint16
	OutboundPort uint16
	AdminPort    uint16
	// ProxyUID is the UID the proxy runs as; its own connections are never
	// redirected, otherwise every upstream connection would loop back into it.
	// 0 means no UID is exempted, which is only allowed with a ProxyMark.
	ProxyUID uint32
	// ProxyMark, when not 0, also exempts connections carrying this socket
	// mark (weft-proxy -socket-mark). It is for places where the proxy cannot
	// run as its own UID, such as an unprivileged user namespace mapping
	// only root, where iptables refuses an owner match on an unmapped UID.
	// Never in a Kubernetes pod: any container with CAP_NET_RAW (default
	// set, Linux 5.17 and later) could mark its own connections and bypass
	// the mesh; see package sockmark.
	ProxyMark         uint32
	SkipInboundPorts  []PortRange
	SkipOutboundPorts []PortRange
	SkipOutboundCIDRs []netip.Prefix
}

// DefaultConfig returns the configuration used when no flag is given.
func DefaultConfig() Config {
	return Config{
		InboundPort:  DefaultInboundPort,
		OutboundPort: DefaultOutboundPort,
		AdminPort:    DefaultAdminPort,
		ProxyUID:     DefaultProxyUID,
	}
}

// Validate rejects configurations that would produce broken or looping rules.
func (c Config) Validate() error {
	if c.InboundPort == 0 || c.OutboundPort == 0 {
		return fmt.Errorf("inbound and outbound ports must be set (got %d and %d)", c.InboundPort, c.OutboundPort)
	}
	if c.InboundPort == c.OutboundPort {
		return fmt.Errorf("inbound and outbound ports must differ (both are %d)", c.InboundPort)
	}
	if c.ProxyUID == 0 && c.ProxyMark == 0 {
		// Excluding root would exempt every root process in the pod from
		// interception, which silently disables the mesh for them; 0 is
		// therefore read as "no UID", and then the proxy needs a mark.
		return fmt.Errorf("proxy UID must not be 0 (0 means no UID exemption, which needs a proxy mark)")
	}
	return nil
}

// ParsePorts parses a comma-separated list of ports and ranges such as
// "25,8000-8100". Empty input yields no ports.
func ParsePorts(s string) ([]PortRange, error) {
	var out []PortRange
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(f, "-")
		l, err := parsePort(lo)
		if err != nil {
			return nil, err
		}
		h := l
		if isRange {
			if h, err = parsePort(hi); err != nil {
				return nil, err
			}
			if h < l {
				return nil, fmt.Errorf("port range %q: end is before start", f)
			}
		}
		out = append(out, PortRange{Lo: l, Hi: h})
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("invalid port %q: want a number between 1 and 65535", s)
	}
	return uint16(n), nil
}

// ParseCIDRs parses a comma-separated list of CIDRs; a bare address is taken
// as a single-host prefix.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("invalid CIDR %q: %w", f, err)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("invalid CIDR %q: %w", f, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
