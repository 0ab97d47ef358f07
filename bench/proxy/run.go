package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/weftmesh/weft/internal/procstat"
)

const vip = "127.77.0.1:80" // the service address weft's snapshot knows; never dialed

type cell struct {
	conns     int
	keepalive bool
}

func (c cell) String() string {
	if !c.keepalive {
		return fmt.Sprintf("%d connections, no keep-alive", c.conns)
	}
	return fmt.Sprintf("%d connections", c.conns)
}

type memory struct{ idle, loaded, hwm, anonIdle, anonLoaded int }

type phase struct {
	proto   string
	setups  []setup
	cells   []cell
	samples map[cell]map[string][]sample
	mem     map[string][]memory // per setup, per process
}

func run(o options) error {
	o.out, _ = filepath.Abs(o.out) // nginx resolves relative paths against its prefix
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	certs := filepath.Join(o.out, "certs")
	if err := mkcerts(certs); err != nil {
		return err
	}
	httpB, grpcB, tcpB := freePort(), freePort(), freePort()
	backend, err := start(o.out, "backend", o.fortio, "server", "-loglevel", "Warning", "-http-port", httpB, "-grpc-port", grpcB,
		"-tcp-port", tcpB, "-redirect-port", "disabled", "-udp-port", "disabled")
	if err != nil {
		return err
	}
	defer backend.stop()
	for _, a := range []string{httpB, grpcB, tcpB} {
		if err := waitListening(a); err != nil {
			return err
		}
	}
	backends := map[string]string{pHTTP1: httpB, pH2: httpB, pGRPC: grpcB, pTCP: tcpB}
	var phases []*phase
	start := time.Now()
	load0 := procstat.LoadAverage()
	for _, proto := range o.protos {
		ph, err := runPhase(o, proto, backends[proto], certs)
		if err != nil {
			return err
		}
		phases = append(phases, ph)
	}
	report := render(o, phases, time.Since(start), load0, procstat.LoadAverage())
	os.WriteFile(filepath.Join(o.out, "results.md"), []byte(report), 0o644)
	fmt.Print(report)
	return replaceSection(o.results, "## Proxy data plane (issue 3)", report)
}

// mkcerts mints the client's and the server's identities into dir.
func mkcerts(dir string) error {
	if out, err := exec.Command("go", "run", "./proxy/internal/testpki/mkcerts", "-dir", dir, "client", "server").CombinedOutput(); err != nil {
		return fmt.Errorf("mkcerts: %v\n%s", err, out)
	}
	return nil
}

func runPhase(o options, proto, backend, certs string) (*phase, error) {
	dir := filepath.Join(o.out, strings.NewReplacer("/", "", ".", "").Replace(proto))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ph := &phase{proto: proto, samples: map[cell]map[string][]sample{}, mem: map[string][]memory{}}
	l := &launcher{dir: dir}
	defer l.stopAll()
	meshes := []string{"auto"}
	if proto == pHTTP1 {
		meshes = append(meshes, "h2")
	}
	setups, err := startSetups(o, dir, proto, backend, certs, meshes, l.launch)
	if err != nil {
		return nil, err
	}
	ph.setups = setups
	for _, s := range ph.setups {
		if err := waitListening(s.addr); err != nil {
			return nil, fmt.Errorf("%s %s: %w", proto, s.name, err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	for _, s := range ph.setups {
		for _, p := range s.procs {
			rss, _, anon := memKB(p.cmd.Process.Pid)
			ph.mem[s.name] = append(ph.mem[s.name], memory{idle: rss, anonIdle: anon})
		}
	}
	warm := o
	warm.dur = 500 * time.Millisecond
	for _, s := range ph.setups {
		if _, err := runFortio(warm, s, proto, 8, true, filepath.Join(dir, "warmup.json")); err != nil {
			return nil, err
		}
	}
	for _, c := range o.conns {
		ph.cells = append(ph.cells, cell{conns: c, keepalive: true})
	}
	if proto == pHTTP1 {
		ph.cells = append(ph.cells, cell{conns: o.conns[0], keepalive: false})
	}
	for r := range o.rounds {
		for ci, c := range ph.cells {
			// Rotate the order so that no setup always runs first or last.
			n := len(ph.setups)
			for i := range n {
				s := ph.setups[(i+r+ci)%n]
				js := filepath.Join(dir, fmt.Sprintf("r%d-c%d-k%v-%s.json", r, c.conns, c.keepalive, strings.ReplaceAll(s.name, " ", "_")))
				sm, err := runFortio(o, s, proto, c.conns, c.keepalive, js)
				if err != nil {
					return nil, err
				}
				if ph.samples[c] == nil {
					ph.samples[c] = map[string][]sample{}
				}
				ph.samples[c][s.name] = append(ph.samples[c][s.name], sm)
				fmt.Fprintf(os.Stderr, "%s round %d %s %-40s p50 %.3fms p99 %.3fms qps %.0f errors %d cpu %v\n",
					proto, r+1, c, s.name, sm.p50*1e3, sm.p99*1e3, sm.qps, sm.errors, sm.cpu)
			}
		}
	}
	for _, s := range ph.setups {
		for i, p := range s.procs {
			rss, hwm, anon := memKB(p.cmd.Process.Pid)
			m := &ph.mem[s.name][i]
			m.loaded, m.hwm, m.anonLoaded = rss, hwm, anon
		}
	}
	return ph, nil
}

// launcher starts processes logged in dir, and stops them all.
type launcher struct {
	dir   string
	procs []*proc
}

func (l *launcher) launch(name string, args ...string) (*proc, error) {
	p, err := start(l.dir, name, args...)
	if err == nil {
		l.procs = append(l.procs, p)
	}
	return p, err
}

func (l *launcher) stopAll() {
	for _, p := range l.procs {
		p.stop()
	}
}

// startSetups starts the proxies of every setup of one protocol: direct, one
// hop through weft (and the -compare binaries), haproxy and nginx, and two
// hops with mTLS through weft (one setup per mesh protocol) and haproxy.
func startSetups(o options, dir, proto, backend, certs string, meshes []string,
	launch func(name string, args ...string) (*proc, error)) ([]setup, error) {
	var setups []setup
	opaque := ""
	if proto == pTCP {
		_, port, _ := strings.Cut(backend, ":")
		opaque = port
	}
	weftArgs := func(extra ...string) []string {
		return append([]string{o.weft, "run", "-outbound", "", "-inbound", "", "-admin", "", "-opaque-ports", opaque, "-log-level", "warn"}, extra...)
	}
	setups = append(setups, setup{name: "direct", addr: backend})

	// One hop.
	a := freePort()
	w1, err := launch("weft-1hop", weftArgs("-static", a+"="+backend)...)
	if err != nil {
		return nil, err
	}
	setups = append(setups, setup{name: "weft", addr: a, procs: []*proc{w1}})
	for _, cmp := range o.compare {
		name, flags, _ := strings.Cut(cmp, "=")
		name, bin, _ := strings.Cut(name, "@")
		a := freePort()
		args := weftArgs(append(strings.Fields(flags), "-static", a+"="+backend)...)
		if bin != "" {
			args[0] = bin
		}
		w, err := launch("weft-"+name, args...)
		if err != nil {
			return nil, err
		}
		setups = append(setups, setup{name: "weft " + name, addr: a, procs: []*proc{w}})
	}
	a = freePort()
	h1, err := launch("haproxy-1hop", o.haproxy, "-db", "-f", writeFile(dir, "haproxy-1hop.cfg", haproxyOneHop(proto, a, backend)))
	if err != nil {
		return nil, err
	}
	setups = append(setups, setup{name: "haproxy", addr: a, procs: []*proc{h1}})
	a = freePort()
	n1, err := launch("nginx-1hop", o.nginx, "-e", filepath.Join(dir, "nginx-error.log"), "-c", writeFile(dir, "nginx.conf", nginxOneHop(proto, a, backend, dir)))
	if err != nil {
		return nil, err
	}
	setups = append(setups, setup{name: "nginx", addr: a, procs: []*proc{n1}})

	// Two hops with mTLS, with the default mesh protocol (auto: HTTP/1.1
	// between the proxies for HTTP/1.x clients, HTTP/2 for HTTP/2 and
	// gRPC). For HTTP/1.1 also with everything multiplexed over HTTP/2,
	// the default before auto; for HTTP/2 and gRPC auto already is h2.
	for _, mesh := range meshes {
		in, out := freePort(), freePort()
		ws, err := launch("weft-server-"+mesh, weftArgs("-inbound", in, "-inbound-target", backend,
			"-cert", certs+"/server/cert.pem", "-key", certs+"/server/key.pem", "-bundle", certs+"/server/bundle.pem")...)
		if err != nil {
			return nil, err
		}
		snap := writeFile(dir, "snapshot-"+mesh+".json", weftSnapshot("127.77.0.1", 80, in, "spiffe://cluster.local/ns/bench/sa/server", proto == pTCP))
		wc, err := launch("weft-client-"+mesh, weftArgs("-static", out+"="+vip, "-snapshot", snap, "-mesh-protocol", mesh,
			"-cert", certs+"/client/cert.pem", "-key", certs+"/client/key.pem", "-bundle", certs+"/client/bundle.pem")...)
		if err != nil {
			return nil, err
		}
		name := "weft 2 hops mTLS"
		if mesh != "auto" {
			name += " (" + mesh + " between proxies)"
		}
		setups = append(setups, setup{name: name, addr: out, procs: []*proc{wc, ws}})
	}
	in, out := freePort(), freePort()
	hs, err := launch("haproxy-server", o.haproxy, "-db", "-f", writeFile(dir, "haproxy-server.cfg", haproxyServerHop(proto, in, backend, certs)))
	if err != nil {
		return nil, err
	}
	hc, err := launch("haproxy-client", o.haproxy, "-db", "-f", writeFile(dir, "haproxy-client.cfg", haproxyClientHop(proto, out, in, certs)))
	if err != nil {
		return nil, err
	}
	setups = append(setups, setup{name: "haproxy 2 hops mTLS", addr: out, procs: []*proc{hc, hs}})

	return setups, nil
}

// replaceSection swaps the section starting at heading (up to the next "## "
// heading) in file for body, or appends it; other sections stay untouched.
func replaceSection(file, heading, body string) error {
	old, _ := os.ReadFile(file)
	s := string(old)
	i := strings.Index(s, heading)
	if i < 0 {
		if s != "" && !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		if s == "" {
			s = "# Benchmark results\n\n"
		}
		return os.WriteFile(file, []byte(s+"\n"+body), 0o644)
	}
	end := len(s)
	if j := strings.Index(s[i+len(heading):], "\n## "); j >= 0 {
		end = i + len(heading) + j + 1
	}
	return os.WriteFile(file, []byte(s[:i]+body+s[end:]), 0o644)
}
