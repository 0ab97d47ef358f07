// Command controlplane benchmarks the config server: N fake proxies hold
// Config streams to a real weft-controlplane process that watches a local
// API server holding S services and E endpoints. It measures the time from an
// API write to the ack of every affected proxy, for a change of one consumer
// HTTPRoute's weights (one namespace's proxies) and for a change every proxy
// sees (a producer route), and the control plane's RSS and CPU.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/configserver/fakeproxy"
	"github.com/weftmesh/weft/controlplane/identity"
	"github.com/weftmesh/weft/internal/procstat"
	"github.com/weftmesh/weft/internal/scheme"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/testpki"
)

var (
	proxies    = flag.Int("proxies", 1000, "fake proxies connected")
	services   = flag.Int("services", 1000, "Services in the API server")
	endpoints  = flag.Int("endpoints", 10000, "endpoints in all, spread over the Services")
	namespaces = flag.Int("namespaces", 10, "application namespaces (proxies, services and one consumer route each)")
	rounds     = flag.Int("rounds", 20, "changes of one route measured")
	allRounds  = flag.Int("all-rounds", 5, "changes touching every proxy measured")
	out        = flag.String("out", "bench/controlplane/RESULTS.md", "results file")
	cpBinary   = flag.String("controlplane", "bin/weft-controlplane", "weft-controlplane binary")
	memLimit   = flag.String("cp-gomemlimit", "", "GOMEMLIMIT of the control plane process (e.g. 100MiB); empty leaves the control plane's default")
	gogc       = flag.String("cp-gogc", "", "GOGC of the control plane process; empty leaves the control plane's default")
	profileDir = flag.String("profile-dir", "", "if set, the control plane serves pprof and the heap and goroutine profiles and /proc/<pid>/smaps_rollup are saved here with 1000 proxies connected")
	deltas     = flag.Bool("deltas", true, "fake proxies accept deltas (false: every response is a full snapshot, as to proxies before deltas)")
)

const cpNS = "weft-system"

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-controlplane:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

func run() error {
	// The default service range (a /24) holds 256 ClusterIPs.
	env, err := testenv.Start(testenv.Options{GatewayAPI: true, APIServerFlags: map[string]string{"service-cluster-ip-range": "10.96.0.0/16"}})
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 2000, 4000
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		return err
	}
	ctx := context.Background()

	ca, err := newCA()
	if err != nil {
		return err
	}
	logf("creating %d services, %d endpoints, %d pods in %d namespaces", *services, *endpoints, *proxies, *namespaces)
	start := time.Now()
	if err := populate(ctx, c, ca); err != nil {
		return err
	}
	logf("populated in %s", time.Since(start).Round(time.Millisecond))

	kubeconfig, err := writeKubeconfig(env.Config)
	if err != nil {
		return err
	}
	defer os.Remove(kubeconfig)
	grpcAddr, healthAddr, metricsAddr := freeAddr(), freeAddr(), freeAddr()
	cp := exec.Command(*cpBinary, "--mesh-name=mesh", "--namespace="+cpNS, "--revision=bench", "--version=bench",
		"--trust-domain=cluster.local", "--grpc-addr="+grpcAddr, "--health-addr="+healthAddr, "--metrics-addr="+metricsAddr, "--webhook-addr=0", "--zap-log-level=error")
	cp.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "POD_NAME=weft-controlplane-bench-0")
	if *memLimit != "" {
		cp.Env = append(cp.Env, "GOMEMLIMIT="+*memLimit)
	}
	if *gogc != "" {
		cp.Env = append(cp.Env, "GOGC="+*gogc)
	}
	pprofAddr := ""
	if *profileDir != "" {
		pprofAddr = freeAddr()
		cp.Args = append(cp.Args, "--pprof-addr="+pprofAddr)
	}
	cp.Stdout, cp.Stderr = os.Stderr, os.Stderr
	if err := cp.Start(); err != nil {
		return fmt.Errorf("starting %s (run `make bin/weft-controlplane`): %w", *cpBinary, err)
	}
	defer func() { _ = cp.Process.Signal(syscall.SIGTERM); _ = cp.Wait() }()
	if err := waitReady(healthAddr); err != nil {
		return err
	}
	pid := cp.Process.Pid
	res := results{loadStart: procstat.LoadAverage()}
	res.idleRSS = procstat.StatusMiB(pid, "VmRSS")
	if pprofAddr != "" {
		saveProfiles(pid, pprofAddr, filepath.Join(*profileDir, "idle"))
	}

	// Connect every proxy and wait for every first ack.
	rec := newRecorder()
	clients := make([]*fakeproxy.Client, *proxies)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	cpu0 := procstat.CPUSeconds(pid)
	t0 := time.Now()
	for i := range clients {
		ns, pod := proxyPod(i)
		tlsCfg, err := ca.clientTLS(ns)
		if err != nil {
			return err
		}
		cl := &fakeproxy.Client{Addr: grpcAddr, TLS: tlsCfg, Namespace: ns, Pod: pod, ProxyVersion: "bench", SkipValidation: true, Deltas: *deltas}
		id := i
		cl.Received = func(v string, at time.Time) { rec.received(id, v, at) }
		clients[i] = cl
		wg.Add(1)
		go func() { defer wg.Done(); cl.Run(cctx) }()
	}
	defer func() {
		cancel()
		wg.Wait()
		for _, cl := range clients {
			cl.Close()
		}
	}()
	if err := rec.waitAll(all(*proxies), 1, 10*time.Minute); err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	res.connect = time.Since(t0)
	res.connectCPU = procstat.CPUSeconds(pid) - cpu0
	// Steady: from 10 s after all are connected (the control plane gives
	// back what a burst left once it is quiet, and looks again 5 s later),
	// the median of samples over 10 s (what runs now and then, such as
	// status writes and lease renewals, maps some of it back), and their
	// range.
	time.Sleep(10 * time.Second)
	var rss, anon, file []float64
	for range 20 {
		time.Sleep(500 * time.Millisecond)
		rss = append(rss, procstat.StatusMiB(pid, "VmRSS"))
		anon = append(anon, procstat.StatusMiB(pid, "RssAnon"))
		file = append(file, procstat.StatusMiB(pid, "RssFile"))
	}
	res.steadyRSS, res.steadyAnon, res.steadyFile = median(rss), median(anon), median(file)
	res.steadyMin, res.steadyMax = slices.Min(rss), slices.Max(rss)
	res.steadyMetrics = scrape(metricsAddr)
	logf("%d proxies connected and acked in %s; control plane RSS %.0f MiB", *proxies, res.connect.Round(time.Millisecond), res.steadyRSS)
	if pprofAddr != "" {
		saveProfiles(pid, pprofAddr, *profileDir)
	}

	// One consumer route: only its namespace's proxies are affected.
	affected := nsProxies(3 % *namespaces)
	m0 := scrape(metricsAddr)
	before := rec.counts(all(*proxies))
	cpu0 = procstat.CPUSeconds(pid)
	for r := range *rounds {
		base := rec.counts(affected)
		w := int32(10 + r%80)
		t := time.Now()
		if err := setWeights(ctx, c, appNS(3%*namespaces), "consumer", w, 100-w); err != nil {
			return err
		}
		lat, err := rec.waitChange(affected, base, t, time.Minute)
		if err != nil {
			return fmt.Errorf("route round %d: %w", r, err)
		}
		res.route = append(res.route, lat...)
		res.routeAll = append(res.routeAll, slices.Max(lat))
		// The others must not have been sent anything.
		time.Sleep(100 * time.Millisecond)
	}
	res.routeCPU = procstat.CPUSeconds(pid) - cpu0
	res.routeSends = sendsBetween(m0, scrape(metricsAddr))
	after := rec.counts(all(*proxies))
	for i := range after {
		if i%*namespaces != 3%*namespaces {
			res.unaffectedSends += int64(after[i] - before[i])
		}
	}
	logf("route change: p50 %s p99 %s max %s (to all affected: p50 %s)", pct(res.route, 50), pct(res.route, 99), pct(res.route, 100), pct(res.routeAll, 50))

	// A producer route every proxy applies.
	everyone := all(*proxies)
	m0 = scrape(metricsAddr)
	cpu0 = procstat.CPUSeconds(pid)
	for r := range *allRounds {
		base := rec.counts(everyone)
		w := int32(10 + r*7%80)
		t := time.Now()
		if err := setWeights(ctx, c, appNS(0), "producer", w, 100-w); err != nil {
			return err
		}
		lat, err := rec.waitChange(everyone, base, t, 5*time.Minute)
		if err != nil {
			return fmt.Errorf("all-proxies round %d: %w", r, err)
		}
		res.all = append(res.all, lat...)
		res.allAll = append(res.allAll, slices.Max(lat))
	}
	res.allCPU = procstat.CPUSeconds(pid) - cpu0
	res.peakRSS = procstat.StatusMiB(pid, "VmHWM")
	res.finalRSS = procstat.StatusMiB(pid, "VmRSS")
	res.metrics = scrape(metricsAddr)
	res.allSends = sendsBetween(m0, res.metrics)
	// And once the changes are over, as after the connections.
	time.Sleep(10 * time.Second)
	res.settledRSS = procstat.StatusMiB(pid, "VmRSS")
	if pprofAddr != "" {
		saveProfiles(pid, pprofAddr, filepath.Join(*profileDir, "end"))
	}
	res.loadEnd = procstat.LoadAverage()
	logf("all-proxies change: p50 %s p99 %s max %s; peak RSS %.0f MiB", pct(res.all, 50), pct(res.all, 99), pct(res.all, 100), res.peakRSS)
	return res.write(*out)
}

func appNS(i int) string { return fmt.Sprintf("bench-app-%d", i) }

func proxyPod(i int) (ns, pod string) {
	return appNS(i % *namespaces), fmt.Sprintf("proxy-%d", i)
}

func nsProxies(ns int) []int {
	var out []int
	for i := range *proxies {
		if i%*namespaces == ns {
			out = append(out, i)
		}
	}
	return out
}

func all(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// populate creates the world in parallel: namespaces, ServiceAccounts,
// Services with their EndpointSlices, meshed Pods, the routes and the issuer.
func populate(ctx context.Context, c client.Client, ca *testCA) error {
	var objs []client.Object
	objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cpNS}}, ca.secret())
	for n := range *namespaces {
		ns := appNS(n)
		objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"}})
	}
	if err := createAll(ctx, c, objs, 1); err != nil {
		return err
	}
	objs = objs[:0]
	perSvc := max(1, *endpoints / *services)
	for s := range *services {
		ns, name := appNS(s%*namespaces), fmt.Sprintf("svc-%d", s)
		objs = append(objs, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"svc": name},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, AppProtocol: ptr.To("http")}}},
		})
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-0", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
		}
		for e := range perSvc {
			n := s*perSvc + e
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 100+n>>16&0xff, n>>8&0xff, n&0xff)},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			})
		}
		objs = append(objs, es)
	}
	for i := range *proxies {
		ns, name := proxyPod(i)
		objs = append(objs, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{meshv1alpha1.LabelRevision: "bench", "app": "load"}},
			Spec: corev1.PodSpec{ServiceAccountName: "app", Containers: []corev1.Container{{Name: "app", Image: "app:1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
		})
	}
	// Two backends for the routes: svc-0 and svc-<namespaces> live in
	// namespace 0, so both routes below target namespace 0's Services.
	for n := range *namespaces {
		objs = append(objs, benchRoute(appNS(n), "consumer", "svc-0"))
	}
	objs = append(objs, benchRoute(appNS(0), "producer", fmt.Sprintf("svc-%d", *namespaces)))
	return createAll(ctx, c, objs, 32)
}

func benchRoute(ns, name, svc string) *gatewayv1.HTTPRoute {
	ref := func(n string, w int32) gatewayv1.HTTPBackendRef {
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{Weight: ptr.To(w), BackendObjectReference: gatewayv1.BackendObjectReference{
			Name: gatewayv1.ObjectName(n), Namespace: ptr.To(gatewayv1.Namespace(appNS(0))), Port: ptr.To(gatewayv1.PortNumber(80))}}}
	}
	return &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
				Group: ptr.To(gatewayv1.Group("")), Kind: ptr.To(gatewayv1.Kind("Service")),
				Name: gatewayv1.ObjectName(svc), Namespace: ptr.To(gatewayv1.Namespace(appNS(0))), Port: ptr.To(gatewayv1.PortNumber(80)),
			}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{ref(svc, 50), ref(fmt.Sprintf("svc-%d", 2**namespaces), 50)}}},
		},
	}
}

// setWeights updates the route's weights, again if the control plane's
// status writer updated the route in between.
func setWeights(ctx context.Context, c client.Client, ns, name string, w1, w2 int32) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var r gatewayv1.HTTPRoute
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &r); err != nil {
			return err
		}
		r.Spec.Rules[0].BackendRefs[0].Weight = ptr.To(w1)
		r.Spec.Rules[0].BackendRefs[1].Weight = ptr.To(w2)
		return c.Update(ctx, &r)
	})
}

func createAll(ctx context.Context, c client.Client, objs []client.Object, workers int) error {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(objs) || firstErr.Load() != nil {
					return
				}
				if err := c.Create(ctx, objs[i]); err != nil {
					firstErr.CompareAndSwap(nil, fmt.Errorf("creating %T %s/%s: %w", objs[i], objs[i].GetNamespace(), objs[i].GetName(), err))
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return nil
}

// recorder keeps, per proxy, how many snapshots it answered and when.
type recorder struct {
	mu    sync.Mutex
	n     []int
	at    [][]time.Time
	count atomic.Int64
}

func newRecorder() *recorder {
	return &recorder{n: make([]int, *proxies), at: make([][]time.Time, *proxies)}
}

func (r *recorder) received(id int, _ string, at time.Time) {
	r.mu.Lock()
	r.n[id]++
	r.at[id] = append(r.at[id], at)
	r.mu.Unlock()
	r.count.Add(1)
}

func (r *recorder) total() int64 { return r.count.Load() }

func (r *recorder) counts(ids []int) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = r.n[id]
	}
	return out
}

func (r *recorder) waitAll(ids []int, n int, timeout time.Duration) error {
	base := make([]int, len(ids))
	for i := range base {
		base[i] = n - 1
	}
	_, err := r.waitChange(ids, base, time.Now(), timeout)
	return err
}

// waitChange waits until every proxy in ids answered a snapshot beyond
// base, and returns for each the time from since to its first such answer.
func (r *recorder) waitChange(ids []int, base []int, since time.Time, timeout time.Duration) ([]time.Duration, error) {
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		done := 0
		for i, id := range ids {
			if r.n[id] > base[i] {
				done++
			}
		}
		if done == len(ids) {
			lat := make([]time.Duration, len(ids))
			for i, id := range ids {
				lat[i] = r.at[id][base[i]].Sub(since)
			}
			r.mu.Unlock()
			return lat, nil
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("only %d of %d proxies answered within %s", done, len(ids), timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)].Round(100 * time.Microsecond)
}

type results struct {
	connect                               time.Duration
	connectCPU, routeCPU, allCPU          float64
	route, routeAll, all, allAll          []time.Duration
	idleRSS, steadyRSS, peakRSS, finalRSS float64
	settledRSS                            float64
	steadyAnon, steadyFile                float64
	steadyMin, steadyMax                  float64
	unaffectedSends                       int64
	metrics, steadyMetrics                map[string]float64
	routeSends, allSends                  sends
	loadStart, loadEnd                    string
}

// scrape reads the control plane's own counters of compilations and sends.
func scrape(addr string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "weft_controlplane_") && !strings.HasPrefix(l, "go_memstats_heap_") && !strings.HasPrefix(l, "go_memstats_stack_") && !strings.HasPrefix(l, "go_goroutines") {
			continue
		}
		f := strings.Fields(l)
		if len(f) == 2 {
			v, _ := strconv.ParseFloat(f[1], 64)
			out[f[0]] = v
		}
	}
	return out
}

// sends are the responses sent in a phase of the run.
type sends struct {
	n, deltas, bytes float64
}

func sendsBetween(a, b map[string]float64) sends {
	d := func(k string) float64 { return b[k] - a[k] }
	return sends{n: d("weft_controlplane_snapshots_sent_total"), deltas: d("weft_controlplane_snapshot_deltas_sent_total"), bytes: d("weft_controlplane_snapshot_bytes_sent_total")}
}

func (s sends) String() string {
	if s.n == 0 {
		return "none"
	}
	return fmt.Sprintf("%.0f (%.0f deltas), mean %.1f KiB", s.n, s.deltas, s.bytes/s.n/1024)
}

// loadAvg is the 1, 5 and 15 minute load averages.
func (r results) write(path string) error {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# Control plane benchmark\n\n")
	fmt.Fprintf(&b, "`make bench-controlplane` on %s, %s, %d CPUs (shared with other work). ", host, time.Now().UTC().Format("2006-01-02 15:04 MST"), numCPU())
	fmt.Fprintf(&b, "A real `weft-controlplane` process watches a local kube-apiserver holding %d Services and %d endpoints (in %d namespaces) and %d meshed Pods; "+
		"%d fake proxies (controlplane/configserver/fakeproxy, real gRPC over mTLS on loopback, in the load process) hold Config streams and ack every snapshot. "+
		"Latency is from just before the API write (HTTPRoute update) to the moment a proxy has sent its ack.\n\n",
		*services, *services*max(1, *endpoints / *services), *namespaces, *proxies, *proxies)
	if *memLimit != "" {
		fmt.Fprintf(&b, "The control plane ran with GOMEMLIMIT=%s.\n\n", *memLimit)
	}
	if *gogc != "" {
		fmt.Fprintf(&b, "The control plane ran with GOGC=%s.\n\n", *gogc)
	}
	if *deltas {
		fmt.Fprintf(&b, "The fake proxies accept deltas. ")
	} else {
		fmt.Fprintf(&b, "The fake proxies do not accept deltas (`-deltas=false`): every response is a full snapshot. ")
	}
	fmt.Fprintf(&b, "Load average (1, 5, 15 min) at the start: %s; at the end: %s.\n\n", r.loadStart, r.loadEnd)
	fmt.Fprintf(&b, "| measurement | p50 | p99 | max | goal |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| one consumer HTTPRoute weight, per affected proxy (%d proxies × %d changes) | %s | %s | %s | p99 ≤ 100 ms |\n",
		len(r.route)/max(1, len(r.routeAll)), len(r.routeAll), pct(r.route, 50), pct(r.route, 99), pct(r.route, 100))
	fmt.Fprintf(&b, "| same, until every affected proxy acked (per change) | %s | %s | %s | |\n", pct(r.routeAll, 50), pct(r.routeAll, 99), pct(r.routeAll, 100))
	fmt.Fprintf(&b, "| producer HTTPRoute weight, every proxy (%d × %d changes) | %s | %s | %s | |\n",
		len(r.all)/max(1, len(r.allAll)), len(r.allAll), pct(r.all, 50), pct(r.all, 99), pct(r.all, 100))
	fmt.Fprintf(&b, "| same, until every proxy acked (per change) | %s | %s | %s | |\n\n", pct(r.allAll, 50), pct(r.allAll, 99), pct(r.allAll, 100))
	fmt.Fprintf(&b, "Snapshots sent to proxies a route change did not concern: %d.\n\n", r.unaffectedSends)
	fmt.Fprintf(&b, "| control plane | value | goal |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| RSS after start, no proxy | %.0f MiB | |\n", r.idleRSS)
	fmt.Fprintf(&b, "| RSS with %d proxies, steady (median of 20 samples over 10 s, from 10 s after the last connected; range) | %.0f MiB (%.0f–%.0f) | ≤ 100 MB |\n", *proxies, r.steadyRSS, r.steadyMin, r.steadyMax)
	fmt.Fprintf(&b, "| of which anonymous (heap, stacks, runtime) / the binary's mapped pages | %.0f / %.0f MiB | |\n", r.steadyAnon, r.steadyFile)
	fmt.Fprintf(&b, "| Go heap in use with %d proxies, steady / at the end | %.0f / %.0f MiB | |\n", *proxies,
		r.steadyMetrics["go_memstats_heap_inuse_bytes"]/(1<<20), r.metrics["go_memstats_heap_inuse_bytes"]/(1<<20))
	fmt.Fprintf(&b, "| of which allocated objects (live and not yet collected), steady / at the end | %.0f / %.0f MiB | |\n",
		r.steadyMetrics["go_memstats_heap_alloc_bytes"]/(1<<20), r.metrics["go_memstats_heap_alloc_bytes"]/(1<<20))
	fmt.Fprintf(&b, "| goroutines / their stacks with %d proxies | %.0f / %.0f MiB | |\n", *proxies, r.steadyMetrics["go_goroutines"], r.steadyMetrics["go_memstats_stack_inuse_bytes"]/(1<<20))
	fmt.Fprintf(&b, "| RSS peak (VmHWM) over the run | %.0f MiB | |\n", r.peakRSS)
	fmt.Fprintf(&b, "| RSS right after the last change | %.0f MiB | |\n", r.finalRSS)
	fmt.Fprintf(&b, "| RSS 10 s after the last change | %.0f MiB | |\n", r.settledRSS)
	fmt.Fprintf(&b, "| CPU to connect %d proxies (%s wall) | %.1f s | |\n", *proxies, r.connect.Round(time.Millisecond), r.connectCPU)
	m := r.metrics
	if n := m["weft_controlplane_compile_duration_seconds_count"]; n > 0 {
		fmt.Fprintf(&b, "| compilations (whole mesh, %d namespaces) / mean duration | %.0f / %.0f ms | |\n", *namespaces, n, 1000*m["weft_controlplane_compile_duration_seconds_sum"]/n)
	}
	if n := m["weft_controlplane_snapshots_sent_total"]; n > 0 {
		fmt.Fprintf(&b, "| snapshots sent / mean size | %.0f / %.2f MiB | |\n", n, m["weft_controlplane_snapshot_bytes_sent_total"]/n/(1<<20))
	}
	fmt.Fprintf(&b, "| responses sent for the consumer-route changes | %s | |\n", r.routeSends)
	fmt.Fprintf(&b, "| responses sent for the all-proxies changes | %s | |\n", r.allSends)
	fmt.Fprintf(&b, "| CPU per consumer-route change | %.0f ms | |\n", 1000*r.routeCPU/float64(max(1, len(r.routeAll))))
	fmt.Fprintf(&b, "| CPU per all-proxies change | %.0f ms | |\n", 1000*r.allCPU/float64(max(1, len(r.allAll))))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path+".tmp", []byte(b.String()), 0o644); err != nil {
		return err
	}
	logf("wrote %s", path+".tmp")
	fmt.Print(b.String())
	return os.Rename(path+".tmp", path)
}

// saveProfiles keeps what explains the control plane's memory: its heap
// and goroutine profiles and the kernel's summary of its mappings.
func saveProfiles(pid int, addr, dir string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		logf("profiles: %v", err)
		return
	}
	// The heap profile is fetched twice, each after a collection: the
	// second no longer counts what sync.Pools held (kept for one cycle).
	for _, p := range [][2]string{{"heap-gc1.pb.gz", "/debug/pprof/heap?gc=1"}, {"heap.pb.gz", "/debug/pprof/heap?gc=1"}, {"goroutine.txt", "/debug/pprof/goroutine?debug=1"}, {"memstats.txt", "/debug/pprof/heap?debug=1"}} {
		name, path := p[0], p[1]
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			logf("profiles: %v", err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		_ = os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	for _, f := range []string{"smaps_rollup", "smaps", "status"} {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f)); err == nil {
			_ = os.WriteFile(filepath.Join(dir, f+".txt"), b, 0o644)
		}
	}
	logf("saved profiles in %s", dir)
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitReady(addr string) error {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the control plane did not become ready")
}

func writeKubeconfig(cfg *rest.Config) (string, error) {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["bench"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["bench"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["bench"] = &clientcmdapi.Context{Cluster: "bench", AuthInfo: "bench"}
	kc.CurrentContext = "bench"
	f, err := os.CreateTemp("", "bench-controlplane-kubeconfig-*")
	if err != nil {
		return "", err
	}
	f.Close()
	return f.Name(), clientcmd.WriteToFile(*kc, f.Name())
}

// testCA is the mesh's root and issuer, minted here so the load process can
// sign the fake proxies' workload certificates itself.
type testCA struct {
	iss             *identity.Issuer
	certPEM, keyPEM []byte
	bundlePEM       []byte
	mu              sync.Mutex
	byNS            map[string]tls.Certificate
}

func newCA() (*testCA, error) {
	ch, err := testpki.NewChain("bench root", "bench issuer")
	if err != nil {
		return nil, err
	}
	ca := &testCA{certPEM: ch.IssuerPEM, keyPEM: ch.IssuerKeyPEM, bundlePEM: ch.BundlePEM, byNS: map[string]tls.Certificate{}}
	ca.iss, err = identity.ParseIssuer(ca.certPEM, ca.keyPEM, ca.bundlePEM)
	return ca, err
}

func (ca *testCA) secret() *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: cpNS, Name: "weft-issuer"},
		Data:       map[string][]byte{identity.KeyCert: ca.certPEM, identity.KeyKey: ca.keyPEM, identity.KeyBundle: ca.bundlePEM},
	}
}

// clientTLS: every proxy of a namespace runs as ServiceAccount "app", so
// they share one leaf (the identity is the same; signing a thousand would
// only slow the start).
func (ca *testCA) clientTLS(ns string) (*tls.Config, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	cert, ok := ca.byNS[ns]
	if !ok {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		id, err := identity.WorkloadID(spiffeid.RequireTrustDomainFromString("cluster.local"), ns, "app")
		if err != nil {
			return nil, err
		}
		chain, _, err := ca.iss.Sign(key.Public(), identity.LeafTemplate{ID: id, TTL: 24 * time.Hour})
		if err != nil {
			return nil, err
		}
		cert = tls.Certificate{Certificate: chain, PrivateKey: key}
		ca.byNS[ns] = cert
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.bundlePEM)
	return &tls.Config{RootCAs: pool, ServerName: "weft-controlplane-bench.weft-system.svc", MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
