// Command weft-proxy is the Weft sidecar. `weft-proxy run` (the default)
// serves the pod's traffic; `weft-proxy init` programs the iptables
// redirection from the proxy-init container (see init.go, owned by
// proxy/iptables).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftmesh/weft/pkg/residency"
	"github.com/weftmesh/weft/proxy/cpclient"
	"github.com/weftmesh/weft/proxy/identity"
	"github.com/weftmesh/weft/proxy/metrics"
	"github.com/weftmesh/weft/proxy/sidecar"
	"github.com/weftmesh/weft/proxy/sockmark"
	"github.com/weftmesh/weft/proxy/upstream"
)

func main() {
	args := os.Args[1:]
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		os.Exit(run(args))
	case "init":
		os.Exit(runInit(args))
	default:
		fmt.Fprintf(os.Stderr, "weft-proxy: unknown command %q (run, init)\n", cmd)
		os.Exit(2)
	}
}

func init() {
	// Linking runtime/pprof (for -pprof) leaves allocation sampling on,
	// and each sampled call stack lands in a 1.4 MB hash table at a random
	// page, which slowly becomes resident. run turns sampling back on for
	// -pprof.
	runtime.MemProfileRate = 0
}

type staticFlag []sidecar.Static

func (s *staticFlag) String() string { return fmt.Sprint(*s) }

// Set parses "listen=dst", e.g. "127.0.0.1:5000=10.96.0.10:80".
func (s *staticFlag) Set(v string) error {
	l, d, ok := strings.Cut(v, "=")
	if !ok {
		return errors.New("want listen=destination")
	}
	dst, err := netip.ParseAddrPort(d)
	if err != nil {
		return err
	}
	*s = append(*s, sidecar.Static{Listen: l, Dst: dst})
	return nil
}

// defaultGCPercent halves the heap the proxy lets grow between
// collections. Its live heap is well under a megabyte, so Go's default
// (100) sizes the heap by its 4 MB minimum goal, and 50 makes that 2 MB:
// 2.2 MiB less RSS at 1000 requests/s for 8-15% more CPU (three times as
// many collections, and the sweeping and scheduling around them). The CPU
// grows with the request rate, the saving does not: a quiet sidecar's heap
// reaches its goal all the same, only later.
const defaultGCPercent = 50

// overridesGOGC says whether -gc-percent applies: when given, or when the
// environment has no GOGC of its own.
func overridesGOGC(fs *flag.FlagSet, getenv func(string) string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "gc-percent" })
	return set || getenv("GOGC") == ""
}

// defaultMemProfileRate is the runtime's default sampling rate.
const defaultMemProfileRate = 512 * 1024

func run(args []string) int {
	fs := flag.NewFlagSet("weft-proxy run", flag.ContinueOnError)
	var (
		static    staticFlag
		outbound  = fs.String("outbound", ":4140", "outbound listener (iptables-redirected outgoing connections); empty disables")
		inbound   = fs.String("inbound", ":4143", "inbound listener; empty disables")
		admin     = fs.String("admin", ":4191", "admin listener (/metrics /ready /live /config /identity)")
		cpAddr    = fs.String("control-plane", os.Getenv(cpclient.EnvControlPlaneAddr), "control plane host:port: get the certificate and snapshots from it instead of files (default $"+cpclient.EnvControlPlaneAddr+")")
		snapshot  = fs.String("snapshot", "", "configuration snapshot file (JSON), reloaded on change")
		cert      = fs.String("cert", "", "SVID certificate chain (PEM); enables mTLS with -key and -bundle")
		key       = fs.String("key", "", "SVID private key (PEM)")
		bundle    = fs.String("bundle", "", "trust bundle (PEM, several roots allowed)")
		target    = fs.String("inbound-target", "", "application address for inbound connections not redirected by iptables (static mode)")
		opaque    = fs.String("opaque-ports", "25,587,3306,5432,6379,11211,27017", "ports never inspected (server-first protocols)")
		mesh      = fs.String("mesh-protocol", "auto", "HTTP between proxies: auto (HTTP/1.x requests over pooled HTTP/1.1, HTTP/2 and gRPC over multiplexed HTTP/2), h2 (all multiplexed) or h1 (all HTTP/1.1)")
		level     = fs.String("log-level", "info", "debug, info, warn or error")
		access    = accessLogFlag("off")
		maxConns  = fs.Int("max-conns", 10000, "cap on open connections")
		detectTO  = fs.Duration("detect-timeout", 3*time.Second, "wait this long for a client's first bytes before treating it as opaque TCP")
		headerTO  = fs.Duration("header-timeout", 10*time.Second, "bound on reading request headers and TLS handshakes")
		idleTO    = fs.Duration("idle-timeout", 90*time.Second, "close idle keep-alive connections after this")
		tcpIdleTO = fs.Duration("tcp-idle-timeout", time.Hour, "close opaque TCP connections and upgraded tunnels (WebSocket) that carried no data either way for this long; 0: never")
		drainTO   = fs.Duration("drain-timeout", 20*time.Second, "on SIGTERM, wait this long for in-flight work")
		reload    = fs.Duration("reload-interval", time.Second, "how often files are checked for changes")
		gcPercent = fs.Int("gc-percent", defaultGCPercent, "GOGC for the proxy (default $GOGC when set)")
		memLimit  = fs.Int64("memory-limit", 0, "soft memory limit in bytes (0: GOMEMLIMIT or none)")
		procs     = fs.Int("procs", 0, "threads running Go code (GOMAXPROCS); 0 or less: $GOMAXPROCS when set, else the container's CPU limit rounded up (followed when it changes), else 1")
		pprofOn   = fs.Bool("pprof", false, "serve Go profiles under /debug/pprof/ on the admin listener")
		release   = fs.Bool("release-startup-pages", true, "once ready, unmap the executable's pages that start-up touched; they stay in the page cache and fault back in when used (lower RSS)")
		markFlag  = fs.String("socket-mark", "", "SO_MARK for the proxy's own connections, exempted by proxy-init --proxy-mark where the proxy cannot run as its own UID (not in Kubernetes pods: see package sockmark) (default $WEFT_SOCKET_MARK)")
	)
	fs.Var(&access, "access-log", "one line per HTTP request to stdout: off, text or json (alone: json) (default $WEFT_ACCESS_LOG)")
	fs.Var(&static, "static", "extra outbound listener with a fixed destination, listen=ip:port (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := fromEnv(fs, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "weft-proxy:", err)
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintln(os.Stderr, "weft-proxy: -log-level:", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	slog.SetDefault(log)
	if overridesGOGC(fs, os.Getenv) {
		debug.SetGCPercent(*gcPercent)
	}
	if *pprofOn {
		runtime.MemProfileRate = defaultMemProfileRate
	}
	autoP := autoProcs(*procs, os.Getenv)
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	} else if autoP {
		n, _ := defaultProcs(os.ReadFile, runtime.NumCPU())
		runtime.GOMAXPROCS(n)
	}
	if *memLimit > 0 {
		debug.SetMemoryLimit(*memLimit)
	}
	mark, err := sockmark.Parse(*markFlag)
	if err != nil {
		log.Error("Bad -socket-mark", "err", err)
		return 2
	}
	meshProto, err := upstream.ParseMeshProtocol(*mesh)
	if err != nil {
		log.Error("Bad -mesh-protocol", "err", err)
		return 2
	}
	ports, err := parsePorts(*opaque)
	if err != nil {
		log.Error("Bad -opaque-ports", "err", err)
		return 2
	}
	reg := prometheus.NewRegistry()
	cfg := sidecar.Config{
		OutboundAddr: *outbound, InboundAddr: *inbound, AdminAddr: *admin,
		Static: static, InboundTarget: *target, OpaquePorts: ports,
		Mesh: meshProto, MaxConns: *maxConns,
		DetectTimeout: *detectTO, HeaderTimeout: *headerTO, IdleTimeout: *idleTO,
		TCPIdleTimeout: tcpIdle(*tcpIdleTO),
		Registry:       reg, Log: log, Pprof: *pprofOn, SocketMark: mark,
		// HTTPRoute and TrafficSplit rules, retries, timeouts, balancing.
		Forwarders: sidecar.RouteForwarders(),
	}
	cfg.AccessLog = access.logger(os.Stdout)
	// The application's probes, moved to the admin port by the injector.
	if cfg.AppProbes, err = sidecar.ParseAppProbes(os.Getenv("WEFT_APP_PROBES")); err != nil {
		log.Error("Bad WEFT_APP_PROBES", "err", err)
		return 2
	}
	var cp *cpclient.Client
	if *cpAddr != "" {
		if *cert != "" || *key != "" || *bundle != "" || *snapshot != "" {
			log.Error("-control-plane excludes -cert, -key, -bundle and -snapshot: the control plane provides them")
			return 2
		}
		cfg.Identity = identity.NewMemorySource(log)
		cfg.RequireSnapshot = true
	} else if *cert != "" || *key != "" || *bundle != "" {
		src, err := identity.NewSource(identity.Files{Cert: *cert, Key: *key, Bundle: *bundle}, log)
		if err != nil {
			log.Error("Identity", "err", err)
			return 1
		}
		cfg.Identity = src
	}
	p, err := sidecar.New(cfg)
	if err != nil {
		log.Error("Config", "err", err)
		return 1
	}
	if *cpAddr != "" {
		cc := cpclient.FromEnv(os.Getenv)
		cc.Addr, cc.Identity, cc.Proxy, cc.Log = *cpAddr, cfg.Identity, p, log
		cc.Metrics, cc.Mark = metrics.NewControlPlane(reg), mark
		if cp, err = cpclient.New(cc); err != nil {
			log.Error("Control plane client", "err", err)
			return 2
		}
	}
	if *snapshot != "" {
		snap, err := sidecar.LoadSnapshot(*snapshot)
		if err == nil {
			err = p.Apply(snap)
		}
		if err != nil {
			log.Error("Snapshot", "path", *snapshot, "err", err)
			return 1
		}
	}
	if err := p.Start(); err != nil {
		log.Error("Start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if *snapshot != "" {
		go p.WatchSnapshot(ctx, *snapshot, *reload)
	}
	cpDone := make(chan struct{})
	if cp != nil {
		// Listeners are up first so that /live answers; /ready waits for
		// the first certificate and snapshot.
		go func() {
			defer close(cpDone)
			if err := cp.Run(ctx); err != nil {
				log.Error("Control plane client stopped", "err", err)
			}
		}()
	} else {
		close(cpDone)
		if cfg.Identity != nil {
			go p.WatchIdentity(ctx, cfg.Identity, *reload)
		}
	}
	if *release {
		go releaseWhenReady(ctx, p, log)
	}
	if autoP {
		go followCPULimit(ctx, 10*time.Second, log)
	}
	log.Info("Serving", "procs", runtime.GOMAXPROCS(0), "controlPlane", *cpAddr, "outbound", p.Addr("outbound"), "inbound", p.Addr("inbound"), "admin", p.Addr("admin"), "static", len(static))
	<-ctx.Done()
	log.Info("Draining", "timeout", *drainTO)
	dctx, cancel := context.WithTimeout(context.Background(), *drainTO)
	defer cancel()
	if err := p.Shutdown(dctx); err != nil {
		log.Warn("Drain incomplete", "err", err)
	}
	<-cpDone
	return 0
}

// releaseWhenReady unmaps the executable's start-up pages once the proxy is
// ready (listening, and with the control plane holding its first
// certificate and snapshot): what serving needs is mapped again on first
// use, the rest (initialisation, flag and config parsing) stops counting in
// the proxy's RSS.
func releaseWhenReady(ctx context.Context, p *sidecar.Proxy, log *slog.Logger) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for !p.Ready() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	n, err := residency.ReleaseExecutable()
	if err != nil {
		log.Warn("Releasing start-up pages", "err", err)
		return
	}
	log.Debug("Released start-up pages", "bytes", n)
}

// fromEnv applies the injector's environment to the flags the command line
// did not set: the listener ports, the log level, the access log and the
// socket mark.
func fromEnv(fs *flag.FlagSet, getenv func(string) string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, e := range []struct{ flag, env string }{
		{"inbound", "WEFT_INBOUND_PORT"},
		{"outbound", "WEFT_OUTBOUND_PORT"},
		{"admin", "WEFT_ADMIN_PORT"},
	} {
		v := getenv(e.env)
		if set[e.flag] || v == "" {
			continue
		}
		if n, err := strconv.ParseUint(v, 10, 16); err != nil || n == 0 {
			return fmt.Errorf("%s=%q is not a port", e.env, v)
		}
		if err := fs.Set(e.flag, ":"+v); err != nil {
			return err
		}
	}
	for flagName, env := range map[string]string{"log-level": "WEFT_LOG_LEVEL", "access-log": "WEFT_ACCESS_LOG", "socket-mark": "WEFT_SOCKET_MARK"} {
		if v := getenv(env); v != "" && !set[flagName] {
			if err := fs.Set(flagName, v); err != nil {
				return fmt.Errorf("%s=%q: %w", env, v, err)
			}
		}
	}
	return nil
}

// accessLogFlag is -access-log: off, text or json. Given alone it means
// json, as the boolean flag it used to be.
type accessLogFlag string

func (a *accessLogFlag) String() string   { return string(*a) }
func (a *accessLogFlag) IsBoolFlag() bool { return true }

func (a *accessLogFlag) Set(v string) error {
	switch strings.ToLower(v) {
	case "off", "false", "":
		*a = "off"
	case "json", "true":
		*a = "json"
	case "text":
		*a = "text"
	default:
		return fmt.Errorf("access log format %q: want off, text or json", v)
	}
	return nil
}

// logger returns the access logger writing to w, or nil when off.
func (a accessLogFlag) logger(w io.Writer) *slog.Logger {
	switch a {
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil))
	case "text":
		return slog.New(slog.NewTextHandler(w, nil))
	}
	return nil
}

func parsePorts(s string) ([]uint16, error) {
	var out []uint16
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("port %q", f)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

// tcpIdle maps the flag's 0 (never) to the Config's negative.
func tcpIdle(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
