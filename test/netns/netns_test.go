package netns

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	RunRole(Roles{
		// whoami prints the UID and the namespace's addresses, so the test
		// sees that the role ran where and as whom it asked for.
		"whoami": func(args []string) int {
			addrs, _ := net.InterfaceAddrs()
			fmt.Printf("uid=%d args=%s addrs=%v\n", os.Getuid(), strings.Join(args, ","), addrs)
			return 0
		},
	})
	os.Exit(m.Run())
}

func TestLinkAndDo(t *testing.T) {
	a, b := New(t, "a"), New(t, "b")
	ifA, ifB := Link(t, a, "10.244.7.1/24", b, "10.244.7.2/24")
	Link(t, a, "fd00:244:7::1/64", b, "fd00:244:7::2/64")

	for _, tc := range []struct{ name, listen, dial string }{
		{"ipv4", "10.244.7.1:8080", "10.244.7.1:8080"},
		{"ipv6", "[fd00:244:7::1]:8080", "[fd00:244:7::1]:8080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ln net.Listener
			if err := a.Do(func() (err error) { ln, err = net.Listen("tcp", tc.listen); return err }); err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err == nil {
					_, _ = io.WriteString(c, "hello from a")
					c.Close()
				}
			}()
			var got []byte
			if err := b.Do(func() error {
				c, err := net.Dial("tcp", tc.dial)
				if err != nil {
					return err
				}
				defer c.Close()
				got, err = io.ReadAll(c)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if string(got) != "hello from a" {
				t.Errorf("read %q, want %q", got, "hello from a")
			}
		})
	}

	if out := a.MustExec("ip", "-br", "addr", "show", ifA); !strings.Contains(out, "10.244.7.1/24") {
		t.Errorf("%s in %s: %s", ifA, a.Name, out)
	}
	if ifA != "eth0" || ifB != "eth0" {
		t.Errorf("first link named %s/%s, want eth0/eth0", ifA, ifB)
	}
	// The test's own threads stayed in the host namespace. Checked by
	// listing addresses, never by dialing: from the host, 10.244.0.0/16 is
	// routed to the outside world.
	hostAddrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range hostAddrs {
		if strings.HasPrefix(addr.String(), "10.244.7.") {
			t.Errorf("the host namespace has %s, which Do should have created only in %s", addr, a.Name)
		}
	}
}

func TestRole(t *testing.T) {
	ns := New(t, "role")
	Link(t, ns, "10.244.8.1/24", New(t, "peer"), "10.244.8.2/24")
	for _, tc := range []struct {
		name string
		uid  int
		want string
	}{
		{"as root", -1, "uid=0 args=x,y"},
		{"as another uid", 2102, "uid=2102 args=x,y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.uid >= 0 && !UIDMapped(tc.uid) {
				t.Skipf("UID %d is not mapped in this user namespace", tc.uid)
			}
			p := Start(t, ns.Role("whoami", tc.uid, "x", "y"))
			if err := p.Wait(); err != nil {
				t.Fatalf("role failed: %v: %s", err, p.Stderr)
			}
			if out := p.Stdout.String(); !strings.Contains(out, tc.want) || !strings.Contains(out, "10.244.8.1/24") {
				t.Errorf("role printed %q, want %q and the namespace's address", out, tc.want)
			}
		})
	}
}

func TestCleanupRemovesNamespace(t *testing.T) {
	Skip(t)
	var name string
	t.Run("inner", func(t *testing.T) {
		ns := New(t, "gone")
		name = ns.Name
		Start(t, ns.Command("sleep", "600"))
	})
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), name) {
		t.Errorf("namespace %s still exists after its test ended:\n%s", name, out)
	}
}

func TestClusterPodsReachEachOther(t *testing.T) {
	c := NewCluster(t)
	a, b := c.AddPod(t, "a"), c.AddPod(t, "b")
	for _, tc := range []struct {
		name string
		addr string
	}{
		{"ipv4", net.JoinHostPort(b.IPv4.String(), "8080")},
		{"ipv6", net.JoinHostPort(b.IPv6.String(), "8080")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ln net.Listener
			if err := b.Do(func() (err error) { ln, err = net.Listen("tcp", tc.addr); return err }); err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				if c, err := ln.Accept(); err == nil {
					_, _ = io.WriteString(c, c.RemoteAddr().String())
					c.Close()
				}
			}()
			var got []byte
			if err := a.Do(func() error {
				conn, err := net.Dial("tcp", tc.addr)
				if err != nil {
					return err
				}
				defer conn.Close()
				got, err = io.ReadAll(conn)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			// b sees a's own address: routed, not masqueraded.
			host, _, _ := net.SplitHostPort(string(got))
			if host != a.IPv4.String() && host != a.IPv6.String() {
				t.Errorf("b saw the connection from %q, want one of a's addresses %s, %s", got, a.IPv4, a.IPv6)
			}
		})
	}
}
