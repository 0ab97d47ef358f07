package iptables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// fakeRunner pretends that the binaries in installed exist. save holds what
// each save binary prints; a missing entry makes it fail. Every call is
// recorded as "name args..." and restore scripts are kept by binary name.
type fakeRunner struct {
	installed map[string]bool
	save      map[string]string
	failOn    string
	calls     []string
	restored  map[string]string
}

func (f *fakeRunner) LookPath(file string) (string, error) {
	if f.installed[file] {
		return "/sbin/" + file, nil
	}
	return "", exec.ErrNotFound
}

func (f *fakeRunner) Run(_ context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	name = strings.TrimPrefix(name, "/sbin/")
	f.calls = append(f.calls, strings.TrimSpace(name+" "+strings.Join(args, " ")))
	if name == f.failOn {
		return nil, fmt.Errorf("%s: exit status 1: boom", name)
	}
	if strings.HasSuffix(name, "-restore") {
		if f.restored == nil {
			f.restored = map[string]string{}
		}
		f.restored[name] = string(stdin)
		return nil, nil
	}
	out, ok := f.save[name]
	if !ok {
		return nil, fmt.Errorf("%s: exit status 1: table does not exist", name)
	}
	return []byte(out), nil
}

func installed(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

var allBinaries = installed(
	"iptables-nft-save", "iptables-nft-restore", "ip6tables-nft-save", "ip6tables-nft-restore",
	"iptables-legacy-save", "iptables-legacy-restore", "ip6tables-legacy-save", "ip6tables-legacy-restore")

const someRules = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j DROP\n-A INPUT -j ACCEPT\nCOMMIT\n"
const oneRule = "*nat\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n"
const noRules = "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"

func TestDetectBackend(t *testing.T) {
	for _, tc := range []struct {
		name    string
		inst    map[string]bool
		save    map[string]string
		want    Backend
		wantErr bool
	}{
		{"both empty picks nft", allBinaries, map[string]string{"iptables-nft-save": noRules, "iptables-legacy-save": noRules}, BackendNFT, false},
		{"legacy holds rules", allBinaries, map[string]string{"iptables-nft-save": noRules, "iptables-legacy-save": someRules}, BackendLegacy, false},
		{"nft holds rules", allBinaries, map[string]string{"iptables-nft-save": oneRule, "iptables-legacy-save": noRules}, BackendNFT, false},
		{"both hold rules, more in legacy", allBinaries, map[string]string{"iptables-nft-save": oneRule, "iptables-legacy-save": someRules}, BackendLegacy, false},
		{"nft installed but the kernel lacks nf_tables", allBinaries, map[string]string{"iptables-legacy-save": noRules}, BackendLegacy, false},
		{"neither kernel side works", allBinaries, map[string]string{}, BackendNFT, false},
		{"only legacy installed", installed("iptables-legacy-save"), map[string]string{"iptables-legacy-save": noRules}, BackendLegacy, false},
		{"nothing installed", installed(), nil, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DetectBackend(context.Background(), &fakeRunner{installed: tc.inst, save: tc.save})
			if (err != nil) != tc.wantErr {
				t.Fatalf("DetectBackend() error = %v, wantErr %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("DetectBackend() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestApply(t *testing.T) {
	kernelHasIPv6 = func() bool { return true }
	t.Cleanup(func() { kernelHasIPv6 = func() bool { return true } })

	bothFamilies := map[string]string{
		"iptables-nft-save": noRules, "ip6tables-nft-save": noRules,
		"iptables-legacy-save": noRules, "ip6tables-legacy-save": noRules,
	}
	v4Only := map[string]string{"iptables-nft-save": noRules, "iptables-legacy-save": noRules}
	for _, tc := range []struct {
		name         string
		opts         Options
		inst         map[string]bool
		save         map[string]string
		failOn       string
		noIPv6Kernel bool
		wantRestored []string
		wantErr      string
		wantOut      string
	}{
		{name: "auto applies both families with nft", opts: Options{}, inst: allBinaries, save: bothFamilies,
			wantRestored: []string{"ip6tables-nft-restore", "iptables-nft-restore"}, wantOut: "Applied IPv6 rules with /sbin/ip6tables-nft-restore"},
		{name: "explicit legacy", opts: Options{Backend: BackendLegacy, IPv6: ModeOff}, inst: allBinaries, save: bothFamilies,
			wantRestored: []string{"iptables-legacy-restore"}},
		{name: "ipv6 auto skips when the nat table is missing", opts: Options{Backend: BackendNFT}, inst: allBinaries, save: v4Only,
			wantRestored: []string{"iptables-nft-restore"}, wantOut: "Skipping IPv6: the IPv6 nat table is unavailable"},
		{name: "ipv6 auto skips without kernel support", opts: Options{Backend: BackendNFT}, inst: allBinaries, save: bothFamilies, noIPv6Kernel: true,
			wantRestored: []string{"iptables-nft-restore"}, wantOut: "Skipping IPv6: the kernel has no IPv6"},
		{name: "ipv6 auto skips without ip6tables", opts: Options{Backend: BackendNFT}, inst: installed("iptables-nft-save", "iptables-nft-restore"), save: bothFamilies,
			wantRestored: []string{"iptables-nft-restore"}, wantOut: "Skipping IPv6: ip6tables-nft-save is not installed"},
		{name: "ipv6 on fails when unsupported", opts: Options{Backend: BackendNFT, IPv6: ModeOn}, inst: allBinaries, save: v4Only,
			wantRestored: []string{"iptables-nft-restore"}, wantErr: "reading current IPv6 nat rules"},
		{name: "restore failure is reported", opts: Options{Backend: BackendNFT, IPv6: ModeOff}, inst: allBinaries, save: bothFamilies, failOn: "iptables-nft-restore",
			wantErr: "applying IPv4 rules: iptables-nft-restore: exit status 1: boom"},
		{name: "missing restore binary", opts: Options{Backend: BackendNFT}, inst: installed("iptables-nft-save"), save: bothFamilies,
			wantErr: "iptables-nft-restore is not installed"},
		{name: "unknown backend", opts: Options{Backend: "ebpf"}, inst: allBinaries, save: bothFamilies, wantErr: `unknown backend "ebpf"`},
		{name: "dry run runs nothing", opts: Options{DryRun: true}, inst: installed(), wantOut: "# IPv6 rules (iptables-restore --noflush format)\n*nat\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kernelHasIPv6 = func() bool { return !tc.noIPv6Kernel }
			f := &fakeRunner{installed: tc.inst, save: tc.save, failOn: tc.failOn}
			var out bytes.Buffer
			tc.opts.Out = &out
			err := Apply(context.Background(), f, DefaultConfig(), tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Apply() error = %v, want it to contain %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("Apply() error = %v", err)
			}
			var restored []string
			for name, script := range f.restored {
				restored = append(restored, name)
				if !strings.Contains(script, "-A WEFT_OUTBOUND -m owner --uid-owner 2102 -j RETURN") {
					t.Errorf("%s got a script without the proxy UID exclusion:\n%s", name, script)
				}
			}
			if got, want := strings.Join(slices.Sorted(slices.Values(restored)), ","), strings.Join(tc.wantRestored, ","); got != want && tc.wantErr == "" {
				t.Errorf("restored with %q, want %q", got, want)
			}
			if tc.opts.DryRun && len(f.calls) > 0 {
				t.Errorf("dry run executed %q", f.calls)
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Errorf("output %q does not contain %q", out.String(), tc.wantOut)
			}
			for _, c := range f.calls {
				if strings.HasSuffix(strings.Fields(c)[0], "-restore") && c != strings.Fields(c)[0]+" --noflush" {
					t.Errorf("restore called as %q, want --noflush", c)
				}
			}
		})
	}
}

func TestCommand(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string
		wantStderr string
	}{
		{"dry run with custom flags", []string{"--dry-run", "--ipv6=off", "--inbound-port=5143", "--outbound-port=5140", "--proxy-uid=1337",
			"--admin-port=5191", "--skip-inbound-ports=22,8000-8100", "--skip-outbound-ports=3306", "--skip-outbound-cidrs=10.96.0.0/12,fd00::/8"}, 0,
			[]string{"--to-ports 5143", "--to-ports 5140", "--uid-owner 1337", "--dport 5191 -j RETURN", "--dport 22 -j RETURN",
				"--dport 8000:8100 -j RETURN", "--dport 3306 -j RETURN", "-d 10.96.0.0/12 -j RETURN"}, ""},
		{"dry run defaults include ipv6", []string{"--dry-run"}, 0, []string{"# IPv4 rules", "# IPv6 rules", "-d ::1/128 -j RETURN"}, ""},
		{"bad port list", []string{"--skip-inbound-ports=80,http"}, 2, nil, `--skip-inbound-ports: invalid port "http"`},
		{"port out of range", []string{"--inbound-port=70000"}, 2, nil, "--inbound-port 70000: not a port"},
		{"same inbound and outbound port", []string{"--inbound-port=4140"}, 2, nil, "inbound and outbound ports must differ"},
		{"root as proxy uid", []string{"--proxy-uid=0"}, 2, nil, "proxy UID must not be 0"},
		{"mark instead of uid", []string{"--dry-run", "--ipv6=off", "--proxy-uid=0", "--proxy-mark=0x2102"}, 0,
			[]string{"-m mark --mark 0x2102 -j RETURN"}, ""},
		{"uid and mark", []string{"--dry-run", "--ipv6=off", "--proxy-mark=8450"}, 0,
			[]string{"--uid-owner 2102 -j RETURN", "-m mark --mark 0x2102 -j RETURN"}, ""},
		{"bad mark", []string{"--proxy-mark=red"}, 2, nil, `--proxy-mark: socket mark "red"`},
		{"bad backend", []string{"--backend=ebpf"}, 2, nil, `--backend "ebpf": want auto, nft or legacy`},
		{"bad ipv6 mode", []string{"--ipv6=maybe"}, 2, nil, `--ipv6 "maybe": want auto, on or off`},
		{"unknown flag", []string{"--bogus"}, 2, nil, "flag provided but not defined: -bogus"},
		{"help", []string{"--help"}, 0, nil, "-skip-outbound-cidrs"},
		{"stray argument", []string{"--dry-run", "now"}, 2, nil, "unexpected arguments: now"},
		{"apply failure exits 1", []string{"--backend=nft"}, 1, nil, "iptables-nft-save is not installed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Command(context.Background(), &fakeRunner{installed: installed()}, tc.args, &stdout, &stderr)
			if code != tc.wantCode {
				t.Fatalf("exit code = %d, want %d; stderr: %s", code, tc.wantCode, stderr.String())
			}
			for _, w := range tc.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tc.wantStderr)
			}
		})
	}
}
