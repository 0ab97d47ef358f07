package iptables

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/weftmesh/weft/proxy/sockmark"
)

// Command implements `weft-proxy init`: it parses args, then applies (or with
// --dry-run prints) the rules. It returns the process exit code: 0 on
// success, 1 when applying failed, 2 on bad usage.
func Command(ctx context.Context, r Runner, args []string, stdout, stderr io.Writer) int {
	cfg, opts, err := ParseFlags(args, stderr)
	if err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		if errors.Is(err, errUsage) {
			return 2 // the flag package has printed the problem and the usage
		}
		fmt.Fprintf(stderr, "weft-proxy init: %v\n", err)
		return 2
	}
	opts.Out = stdout
	if err := Apply(ctx, r, cfg, opts); err != nil {
		fmt.Fprintf(stderr, "weft-proxy init: %v\n", err)
		return 1
	}
	return 0
}

// errUsage marks errors that the flag package has already reported.
var errUsage = errors.New("usage")

// ParseFlags turns the init subcommand's flags into a Config and Options.
func ParseFlags(args []string, stderr io.Writer) (Config, Options, error) {
	def := DefaultConfig()
	fs := flag.NewFlagSet("weft-proxy init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	inbound := fs.Uint("inbound-port", uint(def.InboundPort), "port of the proxy's inbound listener")
	outbound := fs.Uint("outbound-port", uint(def.OutboundPort), "port of the proxy's outbound listener")
	admin := fs.Uint("admin-port", uint(def.AdminPort), "port of the proxy's admin server, never redirected inbound (0: none)")
	uid := fs.Uint("proxy-uid", uint(def.ProxyUID), "UID of the proxy, whose connections are never redirected (0: none, only with --proxy-mark)")
	mark := fs.String("proxy-mark", "", "socket mark (decimal or 0x-hex) of the proxy's connections, never redirected either; only where the proxy cannot run as its own UID: any container with CAP_NET_RAW can set a mark and bypass the mesh")
	skipIn := fs.String("skip-inbound-ports", "", "comma-separated ports or ranges (8000-8100) not redirected inbound")
	skipOut := fs.String("skip-outbound-ports", "", "comma-separated ports or ranges not redirected outbound")
	skipCIDRs := fs.String("skip-outbound-cidrs", "", "comma-separated CIDRs not redirected outbound")
	backend := fs.String("backend", string(BackendAuto), "iptables backend: auto, nft or legacy")
	ipv6 := fs.String("ipv6", string(ModeAuto), "program IPv6 rules: auto, on or off")
	dryRun := fs.Bool("dry-run", false, "print the rules in iptables-restore format and change nothing")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return Config{}, Options{}, err
		}
		return Config{}, Options{}, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return Config{}, Options{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}

	var cfg Config
	var err error
	for _, p := range []struct {
		name string
		v    uint
		dst  *uint16
	}{{"inbound-port", *inbound, &cfg.InboundPort}, {"outbound-port", *outbound, &cfg.OutboundPort}, {"admin-port", *admin, &cfg.AdminPort}} {
		if p.v > 65535 {
			return Config{}, Options{}, fmt.Errorf("--%s %d: not a port", p.name, p.v)
		}
		*p.dst = uint16(p.v)
	}
	if *uid > 1<<32-1 {
		return Config{}, Options{}, fmt.Errorf("--proxy-uid %d: out of range", *uid)
	}
	cfg.ProxyUID = uint32(*uid)
	if cfg.ProxyMark, err = sockmark.Parse(*mark); err != nil {
		return Config{}, Options{}, fmt.Errorf("--proxy-mark: %w", err)
	}
	if cfg.SkipInboundPorts, err = ParsePorts(*skipIn); err != nil {
		return Config{}, Options{}, fmt.Errorf("--skip-inbound-ports: %w", err)
	}
	if cfg.SkipOutboundPorts, err = ParsePorts(*skipOut); err != nil {
		return Config{}, Options{}, fmt.Errorf("--skip-outbound-ports: %w", err)
	}
	if cfg.SkipOutboundCIDRs, err = ParseCIDRs(*skipCIDRs); err != nil {
		return Config{}, Options{}, fmt.Errorf("--skip-outbound-cidrs: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, Options{}, err
	}

	opts := Options{Backend: Backend(*backend), IPv6: Mode(*ipv6), DryRun: *dryRun}
	switch opts.Backend {
	case BackendAuto, BackendNFT, BackendLegacy:
	default:
		return Config{}, Options{}, fmt.Errorf("--backend %q: want auto, nft or legacy", *backend)
	}
	switch opts.IPv6 {
	case ModeAuto, ModeOn, ModeOff:
	default:
		return Config{}, Options{}, fmt.Errorf("--ipv6 %q: want auto, on or off", *ipv6)
	}
	return cfg, opts, nil
}
