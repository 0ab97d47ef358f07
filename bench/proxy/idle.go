package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/weftmesh/weft/internal/procstat"
)

// idleResult is what one setup's proxies hold for n idle connections.
type idleResult struct {
	setup string
	// Per proxy process (client side first): growth of RssAnon (private
	// memory) and VmRSS, in KiB, over the idle connections.
	anon, rss []int
	// slab is the growth of the kernel's slab memory (the whole machine's:
	// sockets of the client, the proxies and the backend, and whatever
	// else the proxies keep in the kernel), in KiB.
	slab int
}

// runIdle measures what an idle connection costs each proxy: -idle
// connections per setup, each after one exchange (a TCP echo, an HTTP/1.1
// request), then left open and idle for a few seconds before the proxies'
// memory is read. Setups run one after the other, so that each proxy's
// growth is its own connections'.
func runIdle(o options) error {
	o.out, _ = filepath.Abs(o.out)
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	certs := filepath.Join(o.out, "certs")
	if err := mkcerts(certs); err != nil {
		return err
	}
	httpB, tcpB := freePort(), freePort()
	backend, err := start(o.out, "backend", o.fortio, "server", "-loglevel", "Warning", "-http-port", httpB, "-grpc-port", "disabled",
		"-tcp-port", tcpB, "-redirect-port", "disabled", "-udp-port", "disabled")
	if err != nil {
		return err
	}
	defer backend.stop()
	for _, a := range []string{httpB, tcpB} {
		if err := waitListening(a); err != nil {
			return err
		}
	}
	streamB, stopStreams, err := serveStreams()
	if err != nil {
		return err
	}
	defer stopStreams()
	t0 := time.Now()
	results := map[string][]idleResult{}
	var protos []string
	for _, proto := range o.protos {
		b := map[string]string{pHTTP1: httpB, pH2: httpB, pStreams: streamB, pTCP: tcpB}[proto]
		if b == "" {
			continue // gRPC: the same connections as HTTP/2
		}
		protos = append(protos, proto)
		r, err := idlePhase(o, proto, b, certs)
		if err != nil {
			return err
		}
		results[proto] = r
	}
	report := renderIdle(o, protos, results, time.Since(t0))
	fmt.Print(report)
	return replaceSection(o.results, idleHeading, report)
}

const idleHeading = "## Idle connections (issue 3)"

// pStreams is the idle phase of open HTTP/2 streams: h2c requests whose
// response has sent its headers and a first message and then waits for the
// next, as a gRPC stream or server-sent events do between messages. Its
// setups are HTTP/2's; its backend is serveStreams.
const pStreams = "HTTP/2 streams"

// streamsPerConn is how many streams the idle phase opens per client
// connection: under haproxy's (100) and nginx's (128) default limits of
// concurrent streams.
const streamsPerConn = 50

// streamMessage is the first (and only) message of an idle stream.
var streamMessage = []byte("data: " + strings.Repeat("x", 1016) + "\n\n")

// serveStreams runs the idle streams' backend in this process: each request
// to /stream gets its headers and one 1 KiB message, then waits until the
// client goes. HTTP/1.1 (nginx's upstream protocol) and h2c.
func serveStreams() (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.Write(streamMessage)
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }, nil
}

func idlePhase(o options, proto, backend, certs string) ([]idleResult, error) {
	dir := filepath.Join(o.out, "idle-"+strings.NewReplacer("/", "", ".", "", " ", "-").Replace(proto))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	l := &launcher{dir: dir}
	defer l.stopAll()
	setupProto := proto
	if proto == pStreams {
		setupProto = pH2
	}
	setups, err := startSetups(o, dir, setupProto, backend, certs, []string{"auto"}, l.launch)
	if err != nil {
		return nil, err
	}
	var out []idleResult
	for _, s := range setups {
		if err := waitListening(s.addr); err != nil {
			return nil, fmt.Errorf("%s %s: %w", proto, s.name, err)
		}
		// One exchange first, so that what every proxy makes once (its
		// first TLS session, its pools) is not counted per connection.
		warm, err := openIdle(proto, s.addr, 1)
		closeAll(warm)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", proto, s.name, err)
		}
		time.Sleep(time.Second)
		before := make([][2]int, len(s.procs))
		for i, p := range s.procs {
			rss, _, anon := memKB(p.cmd.Process.Pid)
			before[i] = [2]int{anon, rss}
		}
		slab0 := slabKB()
		conns, err := openIdle(proto, s.addr, o.idle)
		if err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("%s %s: %w", proto, s.name, err)
		}
		time.Sleep(3 * time.Second)
		r := idleResult{setup: s.name, slab: slabKB() - slab0}
		for i, p := range s.procs {
			rss, _, anon := memKB(p.cmd.Process.Pid)
			r.anon = append(r.anon, anon-before[i][0])
			r.rss = append(r.rss, rss-before[i][1])
		}
		closeAll(conns)
		fmt.Fprintf(os.Stderr, "idle %s %-20s anon %v KiB rss %v KiB slab %d KiB for %d connections\n", proto, s.name, r.anon, r.rss, r.slab, o.idle)
		out = append(out, r)
	}
	return out, nil
}

// openIdle opens n connections to addr and makes one exchange on each: a
// 1 KiB echo for TCP, a GET for HTTP/1.1 and HTTP/2 (h2c; a transport per
// connection), and leaves them open.
func openIdle(proto, addr string, n int) ([]io.Closer, error) {
	switch proto {
	case pH2:
		return openIdleH2(addr, n)
	case pStreams:
		return openIdleStreams(addr, n)
	}
	var conns []io.Closer
	msg := make([]byte, 1024)
	for i := range msg {
		msg[i] = byte('a' + i%26)
	}
	got := make([]byte, len(msg))
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return conns, err
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if proto == pTCP {
			if _, err := c.Write(msg); err != nil {
				return conns, err
			}
			if _, err := io.ReadFull(c, got); err != nil {
				return conns, fmt.Errorf("echo: %w", err)
			}
		} else {
			if _, err := io.WriteString(c, "GET /echo HTTP/1.1\r\nHost: bench\r\n\r\n"); err != nil {
				return conns, err
			}
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return conns, err
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				return conns, fmt.Errorf("GET: %s", res.Status)
			}
		}
		c.SetDeadline(time.Time{})
	}
	return conns, nil
}

// slabKB is the kernel's slab memory (/proc/meminfo), in KiB.
func slabKB() int {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Slab:"); ok {
			var kb int
			fmt.Sscan(v, &kb)
			return kb
		}
	}
	return 0
}

func openIdleH2(addr string, n int) ([]io.Closer, error) {
	var conns []io.Closer
	protos := new(http.Protocols)
	protos.SetUnencryptedHTTP2(true)
	for range n {
		tr := &http.Transport{Protocols: protos}
		conns = append(conns, closer(tr.CloseIdleConnections))
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		res, err := c.Get("http://" + addr + "/echo")
		if err != nil {
			return conns, err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || res.ProtoMajor != 2 {
			return conns, fmt.Errorf("GET: %s %s", res.Proto, res.Status)
		}
	}
	return conns, nil
}

// openIdleStreams opens n streams to addr's /stream, streamsPerConn per h2c
// connection, and reads each one's first message; the streams stay open.
// The returned closers end the streams, then their connections.
func openIdleStreams(addr string, n int) (conns []io.Closer, err error) {
	protos := new(http.Protocols)
	protos.SetUnencryptedHTTP2(true)
	var transports []io.Closer
	defer func() { conns = append(conns, transports...) }()
	var c *http.Client
	msg := make([]byte, len(streamMessage))
	for i := range n {
		if i%streamsPerConn == 0 {
			tr := &http.Transport{Protocols: protos}
			transports = append(transports, closer(tr.CloseIdleConnections))
			c = &http.Client{Transport: tr}
		}
		ctx, cancel := context.WithCancel(context.Background())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/stream", nil)
		if err != nil {
			cancel()
			return conns, err
		}
		res, err := c.Do(req)
		if err != nil {
			cancel()
			return conns, err
		}
		conns = append(conns, closer(func() { cancel(); res.Body.Close() }))
		if res.StatusCode != http.StatusOK || res.ProtoMajor != 2 {
			return conns, fmt.Errorf("GET /stream: %s %s", res.Proto, res.Status)
		}
		if _, err := io.ReadFull(res.Body, msg); err != nil {
			return conns, fmt.Errorf("first message: %w", err)
		}
	}
	return conns, nil
}

// closer makes an io.Closer of f.
type closer func()

func (f closer) Close() error { f(); return nil }

func closeAll(conns []io.Closer) {
	for _, c := range conns {
		c.Close()
	}
}

func renderIdle(o options, protos []string, results map[string][]idleResult, took time.Duration) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "%s\n\n", idleHeading)
	fmt.Fprintf(&b, "Generated by `make bench-proxy-idle` (`go run ./bench/proxy -idle %d`) on %s UTC, %s, in %s; load average %s.\n\n",
		o.idle, time.Now().UTC().Format("2006-01-02 15:04"), host, took.Round(time.Second), procstat.LoadAverage())
	fmt.Fprintf(&b, "Memory per idle connection: %d connections per setup, each after one exchange (a 1 KiB TCP echo, an "+
		"HTTP GET), open and idle for 3 s; growth of each proxy process's private memory (RssAnon) and VmRSS "+
		"over the connections, divided by their number, in KiB; for two hops, client proxy / server proxy. "+
		"Kernel: growth of the machine's slab memory (/proc/meminfo Slab) per connection, which RSS does not "+
		"show and the pod's memory cgroup is charged for; it includes the sockets of the client and the "+
		"backend (the direct row) and of each proxy, and moves by a few hundred KiB between runs. "+
		"HTTP/2 is h2c from the client, one request per connection; gRPC would be the same connections. "+
		"HTTP/2 streams: %d streams per h2c connection, each a request whose response sent its headers and one 1 KiB "+
		"message and then waits, as a gRPC stream or server-sent events do between messages; per stream.\n\n", o.idle, streamsPerConn)
	for _, proto := range protos {
		fmt.Fprintf(&b, "### %s\n\n| setup | private KiB per connection | VmRSS KiB per connection | kernel KiB per connection |\n|---|---:|---:|---:|\n", proto)
		for _, r := range results[proto] {
			fmt.Fprintf(&b, "| %s | %s | %s | %.1f |\n", r.setup, perConn(r.anon, o.idle), perConn(r.rss, o.idle), float64(r.slab)/float64(o.idle))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func perConn(kib []int, n int) string {
	if len(kib) == 0 {
		return "–" // no proxy
	}
	parts := make([]string, len(kib))
	for i, k := range kib {
		parts[i] = fmt.Sprintf("%.1f", float64(k)/float64(n))
	}
	return strings.Join(parts, " / ")
}
