// Command proxy is the weft-proxy data-plane benchmark (issue 3). In one run,
// on one machine, it puts fortio at a fixed request rate through: nothing
// (direct), one weft-proxy, one haproxy, one nginx, two weft-proxies with
// mTLS and two haproxies with mTLS, for HTTP/1.1, HTTP/2 (h2c), gRPC and
// TCP, at several connection counts, rotating the order of the setups every
// round. It reports the median over rounds of each round's added latency
// (p50/p90/p99 of the setup minus direct), the ratio weft/haproxy, RSS and
// CPU per proxy, into a Markdown file. It is started by `make bench-proxy`
// and is not part of `make test`.
//
// It only uses 127.0.0.1.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/weftmesh/weft/internal/procstat"
)

type options struct {
	fortio, weft, haproxy, nginx string
	out, results                 string
	rounds                       int
	dur                          time.Duration
	qps                          int
	// resolution is fortio's -r: the width of its lowest histogram
	// buckets, which its percentiles interpolate within.
	resolution time.Duration
	conns      []int
	protos     []string
	// idle, when positive, selects the idle connections measurement.
	idle int
	// compare adds one-hop weft setups started with other flags, for
	// A/B runs of proxy settings ("name=flags").
	compare []string
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var o options
	var conns, protos string
	flag.StringVar(&o.fortio, "fortio", "bin/fortio", "fortio binary (go install fortio.org/fortio@v1.68.2)")
	flag.StringVar(&o.weft, "weft", "bin/weft-proxy", "weft-proxy binary")
	flag.StringVar(&o.haproxy, "haproxy", "haproxy", "haproxy binary (apt-get install -y haproxy)")
	flag.StringVar(&o.nginx, "nginx", "nginx", "nginx binary (apt-get install -y nginx libnginx-mod-stream)")
	flag.StringVar(&o.out, "out", "bench/out/proxy", "work directory (configs, logs, raw fortio JSON)")
	flag.StringVar(&o.results, "results", "bench/proxy/RESULTS.md", "Markdown file whose proxy section is replaced")
	flag.IntVar(&o.rounds, "rounds", 5, "rounds per cell")
	flag.DurationVar(&o.dur, "t", 2*time.Second, "duration of one fortio run")
	flag.IntVar(&o.qps, "qps", 1000, "request rate")
	// fortio's default, 1 ms, puts every loopback request in one bucket and
	// reports a p50 near 0.5 ms whatever the latency is; at 10 µs its
	// buckets are 10 µs wide below 120 µs, 20 µs to 0.2 ms, 50 µs to
	// 0.5 ms, 100 µs to 1 ms.
	flag.DurationVar(&o.resolution, "resolution", 10*time.Microsecond, "fortio histogram resolution (-r)")
	flag.StringVar(&conns, "c", "8,16", "connection counts")
	flag.StringVar(&protos, "protos", "HTTP/1.1,HTTP/2,gRPC,TCP", "protocols")
	flag.IntVar(&o.idle, "idle", 0, "instead of the load, measure the memory of this many idle connections per setup (HTTP/1.1, HTTP/2 and TCP)")
	flag.Var((*listFlag)(&o.compare), "compare", "extra one-hop weft setup, name[@binary]=flags (e.g. procs1=-procs 1, before@/tmp/old-weft-proxy=); repeatable")
	flag.Parse()
	for _, c := range strings.Split(conns, ",") {
		var n int
		fmt.Sscan(c, &n)
		o.conns = append(o.conns, n)
	}
	o.protos = strings.Split(protos, ",")
	if err := check(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-proxy:", err)
		os.Exit(2)
	}
	do := run
	if o.idle > 0 {
		do = runIdle
	}
	if err := do(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-proxy:", err)
		os.Exit(1)
	}
}

func check(o options) error {
	missing := map[string]string{
		o.fortio:  "GOBIN=$(pwd)/bin go install fortio.org/fortio@v1.68.2",
		o.weft:    "go build -o bin/weft-proxy ./proxy/cmd/weft-proxy",
		o.haproxy: "apt-get install -y haproxy",
		o.nginx:   "apt-get install -y nginx libnginx-mod-stream",
	}
	var errs []string
	for bin, how := range missing {
		if _, err := exec.LookPath(bin); err != nil {
			errs = append(errs, fmt.Sprintf("%s not found: %s", bin, how))
		}
	}
	if _, err := os.Stat("/usr/lib/nginx/modules/ngx_stream_module.so"); err != nil {
		errs = append(errs, "nginx stream module missing: apt-get install -y libnginx-mod-stream")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// freePort asks the kernel for an unused loopback port.
func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitListening(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening after 10s", addr)
}

type proc struct {
	name string
	cmd  *exec.Cmd
}

func start(dir, name string, args ...string) (*proc, error) {
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &proc{name: name, cmd: cmd}, nil
}

func (p *proc) stop() {
	p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// setup is one way of reaching the backend.
type setup struct {
	name  string
	addr  string
	procs []*proc // the proxies, measured for CPU and memory
}

// fortioArgs is the load for one protocol. HTTP sends 1 KiB bodies that the
// echo server returns; gRPC pings carry 1 KiB payloads; TCP writes 1 KiB
// messages to an echo server.
func fortioArgs(o options, proto string, c int, keepalive bool, addr, jsonOut string) []string {
	args := []string{"load", "-quiet", "-qps", fmt.Sprint(o.qps), "-c", fmt.Sprint(c), "-t", o.dur.String(),
		"-payload-size", "1024", "-p", "50,90,99", "-r", fmt.Sprint(o.resolution.Seconds()), "-json", jsonOut}
	if !keepalive {
		args = append(args, "-keepalive=false")
	}
	switch proto {
	case pHTTP1:
		return append(args, "http://"+addr+"/echo")
	case pH2:
		return append(args, "-h2", "http://"+addr+"/echo")
	case pGRPC:
		return append(args, "-grpc", "-ping", addr)
	default:
		return append(args, "tcp://"+addr)
	}
}

type fortioResult struct {
	ActualQPS         float64
	RetCodes          map[string]int
	DurationHistogram struct {
		Count       int
		Percentiles []struct {
			Percentile float64
			Value      float64
		}
	}
	ErrorsDurationHistogram struct{ Count int }
}

type sample struct {
	p50, p90, p99 float64 // seconds
	qps           float64
	errors        int
	cpu           []float64 // vCPU per proxy process
}

func runFortio(o options, s setup, proto string, c int, keepalive bool, jsonOut string) (sample, error) {
	before := make([]float64, len(s.procs))
	for i, p := range s.procs {
		before[i] = cpuSeconds(p.cmd.Process.Pid)
	}
	t0 := time.Now()
	out, err := exec.Command(o.fortio, fortioArgs(o, proto, c, keepalive, s.addr, jsonOut)...).CombinedOutput()
	el := time.Since(t0).Seconds()
	if err != nil {
		return sample{}, fmt.Errorf("fortio %s %s: %v\n%s", s.name, proto, err, out)
	}
	var r fortioResult
	b, err := os.ReadFile(jsonOut)
	if err != nil {
		return sample{}, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return sample{}, err
	}
	var sm sample
	for _, p := range r.DurationHistogram.Percentiles {
		switch p.Percentile {
		case 50:
			sm.p50 = p.Value
		case 90:
			sm.p90 = p.Value
		case 99:
			sm.p99 = p.Value
		}
	}
	sm.qps = r.ActualQPS
	sm.errors = r.ErrorsDurationHistogram.Count
	for code, n := range r.RetCodes {
		// fortio reports 200 for HTTP, SERVING for gRPC health and OK for
		// a TCP echo that came back whole.
		if code != "200" && code != "SERVING" && code != "OK" {
			sm.errors += n
		}
	}
	for i, p := range s.procs {
		sm.cpu = append(sm.cpu, (cpuSeconds(p.cmd.Process.Pid)-before[i])/el)
	}
	return sm, nil
}

// cpuSeconds is the CPU time of a process and its children (nginx workers
// do nginx's work).
func cpuSeconds(pid int) float64 {
	var total float64
	for _, p := range append([]int{pid}, children(pid)...) {
		total += procstat.CPUSeconds(p)
	}
	return total
}

// memKB is VmRSS, VmHWM and RssAnon (the private part of VmRSS; the rest is
// mostly the executable's and libraries' pages from the page cache) of a
// process plus its children (nginx workers, which do the work), in KiB.
func memKB(pid int) (rss, hwm, anon int) {
	for _, p := range append([]int{pid}, children(pid)...) {
		rss += int(procstat.StatusKiB(p, "VmRSS"))
		hwm += int(procstat.StatusKiB(p, "VmHWM"))
		anon += int(procstat.StatusKiB(p, "RssAnon"))
	}
	return rss, hwm, anon
}

func children(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		var c int
		fmt.Sscan(f, &c)
		out = append(out, c)
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
