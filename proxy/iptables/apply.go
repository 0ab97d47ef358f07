package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
)

// Runner runs the iptables binaries. The real one execs; tests pass a fake.
type Runner interface {
	LookPath(file string) (string, error)
	// Run executes name with args, feeding stdin, and returns its stdout.
	Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
}

// ExecRunner runs commands with os/exec.
type ExecRunner struct{}

func (ExecRunner) LookPath(file string) (string, error) { return exec.LookPath(file) }

func (ExecRunner) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s: %w: %s", name, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// Backend is the iptables flavour: the nf_tables one or the legacy xtables.
type Backend string

const (
	BackendAuto   Backend = "auto"
	BackendNFT    Backend = "nft"
	BackendLegacy Backend = "legacy"
)

// Mode says whether IPv6 rules are programmed.
type Mode string

const (
	ModeAuto Mode = "auto" // when ip6tables and the kernel support it
	ModeOn   Mode = "on"   // required: fail if unsupported
	ModeOff  Mode = "off"
)

// Options controls how the rules are applied (as opposed to which rules).
type Options struct {
	Backend Backend
	IPv6    Mode
	DryRun  bool
	// Out receives the dry-run script and a line per applied family.
	Out io.Writer
}

// binaryName names the save or restore tool of a backend and family, for example
// ip6tables-nft-restore.
func binaryName(b Backend, fam Family, tool string) string {
	base := "iptables"
	if fam == IPv6 {
		base = "ip6tables"
	}
	return fmt.Sprintf("%s-%s-%s", base, b, tool)
}

// resolve finds the binary for backend b. The unsuffixed names (iptables-save)
// are deliberately not used: they hide which backend they drive.
func resolve(r Runner, b Backend, fam Family, tool string) (string, bool) {
	if p, err := r.LookPath(binaryName(b, fam, tool)); err == nil {
		return p, true
	}
	return "", false
}

// DetectBackend picks the backend that already holds rules (the node's or
// the CNI's choice, which ours must match for both sets to be evaluated
// predictably), else nft, the default of current distributions.
func DetectBackend(ctx context.Context, r Runner) (Backend, error) {
	counts := map[Backend]int{}
	var found, working []Backend
	for _, b := range []Backend{BackendNFT, BackendLegacy} {
		save, ok := resolve(r, b, IPv4, "save")
		if !ok {
			continue
		}
		found = append(found, b)
		out, err := r.Run(ctx, nil, save)
		if err != nil {
			// The kernel side is missing (no nf_tables, no ip_tables).
			continue
		}
		working = append(working, b)
		counts[b] = countRules(string(out))
	}
	switch {
	case len(found) == 0:
		return "", errors.New("neither iptables-nft-save nor iptables-legacy-save is installed")
	case len(working) == 0:
		// Let applying report the backend's own error.
		return found[0], nil
	case counts[BackendLegacy] > counts[BackendNFT]:
		return BackendLegacy, nil
	default:
		// Preferred order: nft first.
		return working[0], nil
	}
}

// Apply programs cfg. With DryRun it prints the scripts a fresh pod would get
// and runs nothing at all, so it also works where iptables is not installed.
func Apply(ctx context.Context, r Runner, cfg Config, opts Options) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	if opts.DryRun {
		fams := []Family{IPv4}
		if opts.IPv6 != ModeOff {
			fams = append(fams, IPv6)
		}
		for _, f := range fams {
			fmt.Fprintf(out, "# %s rules (iptables-restore --noflush format)\n", f)
			fmt.Fprint(out, Render(cfg, f, ""))
		}
		return nil
	}

	backend := opts.Backend
	if backend == "" || backend == BackendAuto {
		var err error
		if backend, err = DetectBackend(ctx, r); err != nil {
			return err
		}
	} else if backend != BackendNFT && backend != BackendLegacy {
		return fmt.Errorf("unknown backend %q: want auto, nft or legacy", backend)
	}

	if err := applyFamily(ctx, r, cfg, backend, IPv4, out); err != nil {
		return err
	}
	switch opts.IPv6 {
	case ModeOff:
		return nil
	case ModeOn:
		return applyFamily(ctx, r, cfg, backend, IPv6, out)
	default:
		if reason := ipv6Unsupported(ctx, r, backend); reason != "" {
			fmt.Fprintf(out, "Skipping IPv6: %s\n", reason)
			return nil
		}
		return applyFamily(ctx, r, cfg, backend, IPv6, out)
	}
}

// kernelHasIPv6 is a variable so that tests do not depend on the host.
var kernelHasIPv6 = func() bool {
	_, err := os.Stat("/proc/net/if_inet6")
	return err == nil
}

// ipv6Unsupported returns why IPv6 rules cannot be programmed, or "".
func ipv6Unsupported(ctx context.Context, r Runner, b Backend) string {
	if !kernelHasIPv6() {
		return "the kernel has no IPv6"
	}
	save, ok := resolve(r, b, IPv6, "save")
	if !ok {
		return binaryName(b, IPv6, "save") + " is not installed"
	}
	if _, err := r.Run(ctx, nil, save, "-t", "nat"); err != nil {
		return fmt.Sprintf("the IPv6 nat table is unavailable: %v", err)
	}
	return ""
}

func applyFamily(ctx context.Context, r Runner, cfg Config, b Backend, fam Family, out io.Writer) error {
	save, ok := resolve(r, b, fam, "save")
	if !ok {
		return fmt.Errorf("%s is not installed", binaryName(b, fam, "save"))
	}
	restore, ok := resolve(r, b, fam, "restore")
	if !ok {
		return fmt.Errorf("%s is not installed", binaryName(b, fam, "restore"))
	}
	current, err := r.Run(ctx, nil, save, "-t", "nat")
	if err != nil {
		return fmt.Errorf("reading current %s nat rules: %w", fam, err)
	}
	script := Render(cfg, fam, string(current))
	// --noflush keeps whatever else is in the table; the script is applied
	// as one transaction, so a failure leaves the previous rules intact.
	if _, err := r.Run(ctx, []byte(script), restore, "--noflush"); err != nil {
		return fmt.Errorf("applying %s rules: %w", fam, err)
	}
	fmt.Fprintf(out, "Applied %s rules with %s\n", fam, restore)
	return nil
}
