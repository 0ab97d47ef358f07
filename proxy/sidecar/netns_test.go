package sidecar

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

const inNetns = "WEFT_TEST_IN_NETNS"

// TestIptablesRedirect runs the outbound and inbound listeners as in a pod:
// iptables REDIRECTs connections for the service's virtual IP (IPv4 and
// IPv6) to the outbound listener, which recovers the original destination
// with SO_ORIGINAL_DST and forwards to the endpoint from the snapshot, and
// connections to the pod's addresses to the inbound listener, which
// forwards them to the application on loopback at the original port. It re-executes itself in a new
// user and network namespace (unshare -rn) so it needs no root and touches
// no real network.
func TestIptablesRedirect(t *testing.T) {
	if os.Getenv(inNetns) == "" {
		for _, tool := range []string{"unshare", "iptables", "ip6tables", "ip"} {
			if _, err := exec.LookPath(tool); err != nil {
				t.Skipf("%s not found (apt-get install -y util-linux iptables iproute2)", tool)
			}
		}
		cmd := exec.Command("unshare", "-rn", os.Args[0], "-test.run=^TestIptablesRedirect$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), inNetns+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestIptablesRedirect") {
			t.Fatalf("in namespace: %v\n%s", err, out)
		}
		return
	}
	run := func(args ...string) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	run("ip", "link", "set", "lo", "up")
	app4 := serveOn(t, "127.0.0.1:0", "v4 app")
	app6 := serveOn(t, "[::1]:0", "v6 app")
	snap := &meshconfig.Snapshot{Version: "ns", Outbound: meshconfig.Outbound{Services: []meshconfig.Service{
		svc("web4", "127.77.0.1", app4), svc("web6", "fd00::77", app6),
	}}}
	p := startProxy(t, Config{OutboundAddr: "[::]:0"}, snap)
	_, port, _ := net.SplitHostPort(p.Addr("outbound"))
	run("ip", "-6", "addr", "add", "fd00::77/128", "dev", "lo", "nodad")
	run("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.77.0.1", "--dport", "80", "-j", "REDIRECT", "--to-ports", port)
	run("ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "fd00::77", "--dport", "80", "-j", "REDIRECT", "--to-ports", port)
	// Inbound: connections to the pod's addresses go to the inbound
	// listener, which forwards them to the application on the loopback of
	// the same family at the original port. Each application listens on
	// one family only.
	serveOn(t, "127.0.0.1:8081", "v4 inbound app")
	serveOn(t, "[::1]:8082", "v6 inbound app")
	in := startProxy(t, Config{InboundAddr: "[::]:0"}, snap)
	_, inPort, _ := net.SplitHostPort(in.Addr("inbound"))
	run("ip", "addr", "add", "10.9.0.5/32", "dev", "lo")
	run("ip", "-6", "addr", "add", "fd00::5/128", "dev", "lo", "nodad")
	run("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "10.9.0.5", "-j", "REDIRECT", "--to-ports", inPort)
	run("ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "fd00::5", "-j", "REDIRECT", "--to-ports", inPort)
	for _, tc := range []struct{ url, want string }{
		{"http://127.77.0.1:80/", "v4 app"},
		{"http://[fd00::77]:80/", "v6 app"},
		{"http://10.9.0.5:8081/", "v4 inbound app"},
		{"http://[fd00::5]:8082/", "v6 inbound app"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			res, err := h1Client().Get(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if string(b) != tc.want {
				t.Fatalf("got %q, want %q", b, tc.want)
			}
		})
	}
}

func serveOn(t *testing.T, addr, answer string) string {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, answer) })}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

func svc(name, vip, ep string) meshconfig.Service {
	return meshconfig.Service{Name: name, Namespace: "ns", Addresses: []string{vip}, Ports: []meshconfig.ServicePort{{
		Port: 80, DefaultBackends: []meshconfig.Backend{{Name: name, Namespace: "ns", Weight: 1, Endpoints: []meshconfig.Endpoint{{Address: ep}}}},
	}}}
}
