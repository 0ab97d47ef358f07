package iptables

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftmesh/weft/proxy/sockmark"
	"github.com/weftmesh/weft/test/netns"
)

func TestMain(m *testing.M) {
	netns.RunRole(netns.Roles{
		// dial connects to args[0] and prints what the server said; the
		// test runs it as the proxy's UID.
		"dial": func(args []string) int {
			got, err := dialRead(args[0], 0)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			fmt.Print(got)
			return 0
		},
	})
	os.Exit(m.Run())
}

// nsRunner runs the iptables binaries inside a namespace, as the
// proxy-init container runs inside the pod's.
type nsRunner struct {
	ExecRunner
	ns *netns.NS
}

func (r nsRunner) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := r.ns.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", name, err, stderr.String())
	}
	return out, nil
}

// dialRead connects (with a socket mark unless mark is 0), reads until the
// server closes, and returns what it read. The deadline only turns a dropped
// connection into a failure, not a hang.
func dialRead(addr string, mark uint32) (string, error) {
	d := net.Dialer{Timeout: 5 * time.Second, Control: sockmark.Control(mark)}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// serve accepts on ln until it is closed and answers every connection with
// label, followed for the stand-in proxy listeners by the original
// destination that the redirect recorded.
func serve(t *testing.T, ln net.Listener, label string, withOrigDst bool) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			msg := label
			if withOrigDst {
				dst, err := originalDst(c.(*net.TCPConn))
				if err != nil {
					msg += " error=" + err.Error()
				} else {
					msg += " orig=" + dst.String()
				}
			}
			_, _ = io.WriteString(c, msg)
			c.Close()
		}
	}()
}

// originalDst recovers the destination a connection had before REDIRECT.
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var dst netip.AddrPort
	var serr error
	is4 := c.LocalAddr().(*net.TCPAddr).IP.To4() != nil
	err = rc.Control(func(fd uintptr) {
		if is4 {
			// The kernel fills a sockaddr_in; IPv6Mreq is merely a buffer
			// of a suitable size.
			var m *unix.IPv6Mreq
			if m, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST); serr == nil {
				raw := m.Multiaddr
				dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(raw[4:8])), uint16(raw[2])<<8|uint16(raw[3]))
			}
			return
		}
		var info *unix.IPv6MTUInfo
		if info, serr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSOOriginalDst); serr == nil {
			// sin6_port holds network-order bytes in a host-order field.
			var p [2]byte
			binary.NativeEndian.PutUint16(p[:], info.Addr.Port)
			dst = netip.AddrPortFrom(netip.AddrFrom16(info.Addr.Addr), binary.BigEndian.Uint16(p[:]))
		}
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	return dst, serr
}

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h,
// which x/sys/unix does not define.
const ip6tSOOriginalDst = 80

var saveNoise = regexp.MustCompile(`(?m)^#.*$|\[\d+:\d+\]`)

// saveNat returns the nat table of both families without the counters and
// timestamps, which change with traffic and time.
func saveNat(t *testing.T, ns *netns.NS, backend Backend) string {
	t.Helper()
	var all strings.Builder
	for _, fam := range []Family{IPv4, IPv6} {
		all.WriteString(saveNoise.ReplaceAllString(ns.MustExec(binaryName(backend, fam, "save"), "-t", "nat"), ""))
	}
	return all.String()
}

func TestRedirectInNamespaces(t *testing.T) {
	for _, backend := range []Backend{BackendNFT, BackendLegacy} {
		t.Run(string(backend), func(t *testing.T) {
			netns.Skip(t, binaryName(backend, IPv4, "restore"), binaryName(backend, IPv6, "restore"))
			t.Run("uid and mark", func(t *testing.T) {
				if !netns.UIDMapped(DefaultProxyUID) || !netns.UIDMapped(1000) {
					// iptables rejects an owner match on an unmapped UID.
					t.Skipf("UIDs %d and 1000 must be mapped in this user namespace (plain `unshare -Ur` maps only root; use root or a wider --map-users)", DefaultProxyUID)
				}
				testRedirect(t, backend, false)
			})
			// What the whole-mesh harness does in an unprivileged user
			// namespace, where only root is mapped.
			t.Run("mark only", func(t *testing.T) { testRedirect(t, backend, true) })
		})
	}
}

// proxyMark is the socket mark the tests give proxy-init and the stand-in
// proxy's connections.
const proxyMark = 0x2102

func testRedirect(t *testing.T, backend Backend, markOnly bool) {
	pod, client := netns.New(t, "pod"), netns.New(t, "client")
	netns.Link(t, pod, "10.244.1.2/24", client, "10.244.1.1/24")
	client.MustExec("ip", "addr", "add", "10.244.1.100/24", "dev", "eth0")
	netns.Link(t, pod, "fd00:244:1::2/64", client, "fd00:244:1::1/64")
	// Any other destination goes to the client namespace: nothing leaves
	// the namespaces even if a redirect were missing.
	pod.MustExec("ip", "route", "add", "default", "via", "10.244.1.1")

	listen := func(ns *netns.NS, addr, label string, origDst bool) {
		t.Helper()
		var ln net.Listener
		if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
			t.Fatalf("listening on %s in %s: %v", addr, ns.Name, err)
		}
		serve(t, ln, label, origDst)
	}
	// The stand-in proxy and the application in the pod.
	listen(pod, ":4143", "inbound", true)
	listen(pod, ":4140", "outbound", true)
	listen(pod, ":8080", "app:8080", false)
	listen(pod, ":9000", "app:9000", false)
	listen(pod, ":4191", "admin", false)
	// Servers outside the pod.
	listen(client, ":8080", "upstream:8080", false)
	listen(client, ":3306", "upstream:3306", false)

	args := []string{"--backend=" + string(backend), "--ipv6=on", "--skip-inbound-ports=9000",
		"--skip-outbound-ports=3306", "--skip-outbound-cidrs=10.244.1.96/28", fmt.Sprintf("--proxy-mark=%#x", proxyMark)}
	if markOnly {
		args = append(args, "--proxy-uid=0")
	}
	runInit := func() {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := Command(context.Background(), nsRunner{ns: pod}, args, &stdout, &stderr); code != 0 {
			t.Fatalf("init exited %d: %s", code, stderr.String())
		}
	}
	runInit()
	first := saveNat(t, pod, backend)
	runInit()
	if second := saveNat(t, pod, backend); second != first {
		t.Errorf("running init twice changed the rules:\nfirst:\n%s\nsecond:\n%s", first, second)
	}
	// A later init with --backend=auto must pick what this one programmed.
	if got, err := DetectBackend(context.Background(), nsRunner{ns: pod}); err != nil || got != backend {
		t.Errorf("DetectBackend() after init = %q, %v; want %q", got, err, backend)
	}
	if n := strings.Count(first, "-A PREROUTING -p tcp -j WEFT_INBOUND"); n != 2 {
		t.Errorf("found %d PREROUTING jumps, want one per family:\n%s", n, first)
	}

	for _, tc := range []struct {
		name string
		from *netns.NS
		uid  int // -1: the test process itself (root, like the app)
		mark uint32
		addr string
		want string
	}{
		{"inbound to the app port is redirected", client, -1, 0, "10.244.1.2:8080", "inbound orig=10.244.1.2:8080"},
		{"inbound over IPv6 is redirected", client, -1, 0, "[fd00:244:1::2]:8080", "inbound orig=[fd00:244:1::2]:8080"},
		{"inbound skipped port reaches the app", client, -1, 0, "10.244.1.2:9000", "app:9000"},
		{"inbound admin port reaches the admin server", client, -1, 0, "10.244.1.2:4191", "admin"},
		{"outbound to a peer is redirected", pod, -1, 0, "10.244.1.1:8080", "outbound orig=10.244.1.1:8080"},
		{"outbound to any address is redirected", pod, -1, 0, "10.244.9.9:80", "outbound orig=10.244.9.9:80"},
		{"outbound over IPv6 is redirected", pod, -1, 0, "[fd00:244:1::1]:8080", "outbound orig=[fd00:244:1::1]:8080"},
		{"outbound skipped port goes direct", pod, -1, 0, "10.244.1.1:3306", "upstream:3306"},
		{"outbound skipped CIDR goes direct", pod, -1, 0, "10.244.1.100:8080", "upstream:8080"},
		{"loopback goes direct", pod, -1, 0, "127.0.0.1:8080", "app:8080"},
		{"own pod IP goes direct over lo", pod, -1, 0, "10.244.1.2:8080", "app:8080"},
		{"the proxy UID bypasses the redirect", pod, DefaultProxyUID, 0, "10.244.1.1:8080", "upstream:8080"},
		{"other UIDs are redirected", pod, 1000, 0, "10.244.1.1:8080", "outbound orig=10.244.1.1:8080"},
		{"the proxy mark bypasses the redirect", pod, -1, proxyMark, "10.244.1.1:8080", "upstream:8080"},
		{"another mark is redirected", pod, -1, proxyMark + 1, "10.244.1.1:8080", "outbound orig=10.244.1.1:8080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if markOnly && tc.uid >= 0 {
				t.Skip("no UID is exempted with --proxy-uid=0")
			}
			var got string
			if tc.uid >= 0 {
				p := netns.Start(t, tc.from.Role("dial", tc.uid, tc.addr))
				if err := p.Wait(); err != nil {
					t.Fatalf("dial as UID %d: %v: %s", tc.uid, err, p.Stderr)
				}
				got = p.Stdout.String()
			} else if err := tc.from.Do(func() (err error) { got, err = dialRead(tc.addr, tc.mark); return err }); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("connecting to %s got %q, want %q", tc.addr, got, tc.want)
			}
		})
	}
}
