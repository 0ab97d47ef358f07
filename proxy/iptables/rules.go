package iptables

import (
	"fmt"
	"strings"
)

// Family selects the IP version a rule set is rendered for.
type Family int

const (
	IPv4 Family = iota
	IPv6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// The chains Weft owns in the nat table. Each is declared in every restore
// script, which makes iptables-restore --noflush flush and rebuild it: that
// is what makes running init twice leave exactly the same rules.
const (
	ChainInbound     = "WEFT_INBOUND"
	ChainInRedirect  = "WEFT_IN_REDIRECT"
	ChainOutbound    = "WEFT_OUTBOUND"
	ChainOutRedirect = "WEFT_OUT_REDIRECT"
)

// jumps are the only rules Weft adds to built-in chains. They are inserted at
// the head so that interception wins over rules another tool appended, and
// only when missing, since --noflush never flushes built-in chains.
var jumps = []struct{ chain, rule string }{
	{"PREROUTING", "-p tcp -j " + ChainInbound},
	{"OUTPUT", "-p tcp -j " + ChainOutbound},
}

// Render returns an iptables-restore script (to be applied with --noflush)
// that programs cfg for one address family. current is the output of
// `iptables-save -t nat` for that family (empty for a fresh namespace); it is
// only used to leave out jumps that are already installed.
//
// Loopback: all traffic leaving through lo is left alone. That covers
// 127.0.0.0/8 and ::1, and also an application connecting to its own pod IP,
// which the kernel routes through lo: such a connection reaches the
// application directly, without the proxy (no mTLS, policy or metrics, which
// add nothing to a pod talking to itself). This also keeps the proxy's own
// inbound forwarding to the application out of the rules regardless of UID.
func Render(cfg Config, fam Family, current string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }

	w("*nat")
	for _, c := range []string{ChainInbound, ChainInRedirect, ChainOutbound, ChainOutRedirect} {
		w(":%s - [0:0]", c)
	}

	w("-A %s -p tcp -j REDIRECT --to-ports %d", ChainInRedirect, cfg.InboundPort)
	if cfg.AdminPort != 0 {
		// Probes and metrics scrapes talk to the admin server itself.
		w("-A %s -p tcp --dport %d -j RETURN", ChainInbound, cfg.AdminPort)
	}
	for _, r := range cfg.SkipInboundPorts {
		w("-A %s -p tcp --dport %s -j RETURN", ChainInbound, r.iptablesArg())
	}
	w("-A %s -p tcp -j %s", ChainInbound, ChainInRedirect)

	w("-A %s -p tcp -j REDIRECT --to-ports %d", ChainOutRedirect, cfg.OutboundPort)
	if cfg.ProxyUID != 0 {
		w("-A %s -m owner --uid-owner %d -j RETURN", ChainOutbound, cfg.ProxyUID)
	}
	if cfg.ProxyMark != 0 {
		w("-A %s -m mark --mark %#x -j RETURN", ChainOutbound, cfg.ProxyMark)
	}
	w("-A %s -o lo -j RETURN", ChainOutbound)
	// Loopback destinations always leave through lo; the explicit rule keeps
	// them excluded even if someone routes 127/8 elsewhere (route_localnet).
	if fam == IPv6 {
		w("-A %s -d ::1/128 -j RETURN", ChainOutbound)
	} else {
		w("-A %s -d 127.0.0.0/8 -j RETURN", ChainOutbound)
	}
	for _, r := range cfg.SkipOutboundPorts {
		w("-A %s -p tcp --dport %s -j RETURN", ChainOutbound, r.iptablesArg())
	}
	for _, p := range cfg.SkipOutboundCIDRs {
		if p.Addr().Is4() != (fam == IPv4) {
			continue
		}
		w("-A %s -d %s -j RETURN", ChainOutbound, p.String())
	}
	w("-A %s -p tcp -j %s", ChainOutbound, ChainOutRedirect)

	for _, j := range jumps {
		if !hasRule(current, j.chain, j.rule) {
			w("-I %s 1 %s", j.chain, j.rule)
		}
	}
	w("COMMIT")
	return b.String()
}

// hasRule reports whether an iptables-save dump holds the rule in chain.
// iptables-save prints rules in a canonical form, which is the form Render
// writes, so a plain comparison is enough.
func hasRule(save, chain, rule string) bool {
	want := "-A " + chain + " " + rule
	inNat := false
	for _, line := range strings.Split(save, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "*"):
			inNat = line == "*nat"
		case inNat && line == want:
			return true
		}
	}
	return false
}

// countRules counts the rules of any table in an iptables-save dump; backend
// detection uses it to find the backend the node already programs.
func countRules(save string) int {
	n := 0
	for _, line := range strings.Split(save, "\n") {
		if strings.HasPrefix(line, "-A ") {
			n++
		}
	}
	return n
}
