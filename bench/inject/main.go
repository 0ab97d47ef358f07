// Command inject benchmarks the sidecar injector's admission latency (issue
// 7; goal: webhook p99 ≤ 5 ms at 200 pod creations per second). In one run,
// on one machine, it compares the injector with a no-op webhook that only
// decodes the AdmissionReview and allows the pod, rotating the order every
// round:
//
//   - in process: the handler alone, called by a few goroutines as fast as
//     they can, with a realistic pod (the cost of deciding and patching);
//   - through the real API server (envtest's kube-apiserver and etcd): pods
//     created at a fixed rate in a meshed namespace, timing the webhook's own
//     handling on the server side and the whole create on the client side.
//
// It writes bench/inject/RESULTS.md. It is started by `make bench-inject` and
// is not part of `make test`. It only uses 127.0.0.1.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	admregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/controlplane/inject"
	"github.com/weftmesh/weft/controlplane/inject/webhook"
	"github.com/weftmesh/weft/internal/procstat"
	"github.com/weftmesh/weft/internal/testenv"
)

type options struct {
	rate        int
	dur         time.Duration
	rounds      int
	inprocN     int
	concurrency int
	results     string
}

func main() {
	var o options
	flag.IntVar(&o.rate, "rate", 200, "pod creations per second through the API server")
	flag.DurationVar(&o.dur, "t", 5*time.Second, "duration of one API-server run")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds (each runs both handlers)")
	flag.IntVar(&o.inprocN, "n", 20000, "requests per in-process run")
	flag.IntVar(&o.concurrency, "c", runtime.GOMAXPROCS(0), "goroutines of the in-process run")
	flag.StringVar(&o.results, "results", "bench/inject/RESULTS.md", "Markdown results file")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard()) // the test API server's client logs nothing we report
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-inject:", err)
		os.Exit(1)
	}
}

// handlers under comparison, by name.
const (
	weft = "weft injector"
	noop = "no-op webhook"
)

type samples struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *samples) add(d time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
}

func (s *samples) take() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.d
	s.d = nil
	return out
}

// router serves the current handler and times it twice: from the request's
// arrival (its headers read) to the response, and from the moment its body
// has been received to the response. The difference is the wait for the
// API server to send the body, which on a CPU-starved machine is the API
// server's time, not the webhook's.
type router struct {
	current  atomic.Pointer[http.Handler]
	timings  samples
	handling samples
}

func (r *router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	received := time.Now()
	(*r.current.Load()).ServeHTTP(w, req)
	r.timings.add(time.Since(start))
	r.handling.add(time.Since(received))
}

func (r *router) use(h http.Handler) {
	r.current.Store(&h)
	r.timings.take()
	r.handling.take()
}

// noopHandler is the baseline: the least any webhook does.
type noopHandler struct{}

func (noopHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, webhook.DefaultMaxBodyBytes))
	review := &admissionv1.AdmissionReview{}
	if err == nil {
		err = json.Unmarshal(body, review)
	}
	if err != nil || review.Request == nil {
		http.Error(w, "bad review", http.StatusBadRequest)
		return
	}
	out, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: review.TypeMeta,
		Response: &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true},
	})
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}

// appPod is what a Deployment typically creates: two containers, ports,
// probes, resources, volumes.
func appPod(ns, name string) *corev1.Pod {
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("http")}},
			PeriodSeconds: 10}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Labels:      map[string]string{"app.kubernetes.io/name": "web", "pod-template-hash": "7d9c5b"},
			Annotations: map[string]string{"prometheus.io/scrape": "true"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "default",
			Containers: []corev1.Container{{
				Name: "web", Image: "example.com/web:1.4.2",
				Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}},
				Env:            []corev1.EnvVar{{Name: "LOG_LEVEL", Value: "info"}},
				LivenessProbe:  probe("/healthz"),
				ReadinessProbe: probe("/ready"),
				VolumeMounts:   []corev1.VolumeMount{{Name: "cache", MountPath: "/cache"}},
			}, {
				Name: "log-forwarder", Image: "example.com/fwd:2",
			}},
			Volumes: []corev1.Volume{{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
}

type result struct {
	loadBefore, loadAfter string
	inproc                map[string][]time.Duration
	webhook               map[string][]time.Duration
	handled               map[string][]time.Duration
	create                map[string][]time.Duration
	errors                map[string]int
	late                  map[string]int
	sent                  map[string]int
	elapsed               map[string]time.Duration
}

func run(o options) error {
	if _, err := testenv.AssetsDir(); err != nil {
		return err
	}
	hook, err := sampleWebhook()
	if err != nil {
		return err
	}
	env, err := testenv.Start(testenv.Options{Webhooks: &envtest.WebhookInstallOptions{
		MutatingWebhooks: []*admregv1.MutatingWebhookConfiguration{hook},
	}})
	if err != nil {
		return err
	}
	defer env.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 10000, 10000
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	anchors, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "controlplane", "inject", "testdata", "trust-anchors.pem"))
	if err != nil {
		return err
	}
	const meshNS = "weft-system"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: meshNS}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := cs.CoreV1().ConfigMaps(meshNS).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: webhook.TrustBundleConfigMap},
		Data:       map[string]string{webhook.TrustBundleKey: string(anchors)},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	informers, err := cache.New(env.Config, cache.Options{Scheme: env.Client.Scheme()})
	if err != nil {
		return err
	}
	go informers.Start(ctx)
	informers.WaitForCacheSync(ctx)

	icfg := inject.DefaultConfig()
	icfg.MeshNamespace = meshNS
	handlers := map[string]http.Handler{
		weft: &webhook.Handler{Config: icfg, TrustAnchors: webhook.ConfigMapTrustAnchors(informers, meshNS),
			Namespaces: informers, APIReader: env.Client, Log: logr.Discard()},
		noop: noopHandler{},
	}

	rt := &router{}
	rt.use(handlers[weft])
	opts := env.Environment().WebhookInstallOptions
	srv := &webhook.Server{
		Addr:    net.JoinHostPort(opts.LocalServingHost, fmt.Sprint(opts.LocalServingPort)),
		CertDir: opts.LocalServingCertDir, Handler: rt, Log: logr.Discard(),
	}
	go func() {
		if err := srv.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "webhook server:", err)
		}
	}()

	res := &result{
		loadBefore: procstat.LoadAverage(),
		inproc:     map[string][]time.Duration{}, webhook: map[string][]time.Duration{}, handled: map[string][]time.Duration{}, create: map[string][]time.Duration{},
		errors: map[string]int{}, late: map[string]int{}, sent: map[string]int{}, elapsed: map[string]time.Duration{},
	}
	meshed := func(name string) (string, error) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{inject.LabelInject: inject.ValueEnabled}}}
		_, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
		return name, err
	}
	ready, err := meshed("bench-ready")
	if err != nil {
		return err
	}
	// Wait until the API server calls the injector (it loads webhook
	// registrations asynchronously).
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ready).Create(ctx, appPod(ready, "ready"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && p.Annotations[inject.AnnotationInjected] != "", nil
	}); err != nil {
		return fmt.Errorf("the API server does not call the injector: %w", err)
	}

	review, err := reviewBody(appPod(ready, "web-7d9c5b-x2x4z"))
	if err != nil {
		return err
	}
	order := []string{weft, noop}
	for round := range o.rounds {
		for _, name := range order {
			d, err := inProcess(handlers[name], review, o.inprocN, o.concurrency)
			if err != nil {
				return fmt.Errorf("%s in process: %w", name, err)
			}
			res.inproc[name] = append(res.inproc[name], d...)
		}
		for _, name := range order {
			ns, err := meshed(fmt.Sprintf("bench-%d-%s", round, strings.Fields(name)[0]))
			if err != nil {
				return err
			}
			rt.use(handlers[name])
			fmt.Fprintf(os.Stderr, "round %d: %s, %d pods/s for %s\n", round+1, name, o.rate, o.dur)
			creates, errs, late, sent, elapsed := load(ctx, cs, ns, o.rate, o.dur, name == weft)
			res.webhook[name] = append(res.webhook[name], rt.timings.take()...)
			res.handled[name] = append(res.handled[name], rt.handling.take()...)
			res.create[name] = append(res.create[name], creates...)
			res.errors[name] += errs
			res.late[name] += late
			res.sent[name] += sent
			res.elapsed[name] += elapsed
		}
		slices.Reverse(order)
	}
	res.loadAfter = procstat.LoadAverage()
	return writeResults(o, res)
}

func sampleWebhook() (*admregv1.MutatingWebhookConfiguration, error) {
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "webhook", "manifests.yaml"))
	if err != nil {
		return nil, err
	}
	hook := &admregv1.MutatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict(b, hook); err != nil {
		return nil, err
	}
	for i := range hook.Webhooks {
		// envtest joins host and path with a slash of its own.
		p := strings.TrimPrefix(webhook.Path, "/")
		hook.Webhooks[i].ClientConfig.Service.Path = &p
	}
	return hook, nil
}

func reviewBody(pod *corev1.Pod) ([]byte, error) {
	raw, err := json.Marshal(pod)
	if err != nil {
		return nil, err
	}
	return json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "bench", Namespace: pod.Namespace, Operation: admissionv1.Create,
			Kind:     metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Object:   kruntime.RawExtension{Raw: raw},
		},
	})
}

// inProcess calls h n times from c goroutines and times each call.
func inProcess(h http.Handler, body []byte, n, c int) ([]time.Duration, error) {
	var (
		next   atomic.Int64
		out    samples
		failed atomic.Value
		wg     sync.WaitGroup
	)
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				req := httptest.NewRequest(http.MethodPost, webhook.Path, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				start := time.Now()
				h.ServeHTTP(rec, req)
				out.add(time.Since(start))
				if rec.Code != http.StatusOK {
					failed.Store(fmt.Errorf("status %d: %s", rec.Code, rec.Body.String()))
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		return nil, err
	}
	return out.take(), nil
}

// load creates pods at rate for dur, open loop: a create is started on
// schedule whether or not earlier ones have finished (up to 512 in flight;
// starts that had to wait for a slot are counted as late).
func load(ctx context.Context, cs kubernetes.Interface, ns string, rate int, dur time.Duration, wantInjected bool) (lat []time.Duration, errs, late, sent int, elapsed time.Duration) {
	var (
		out     samples
		nerr    atomic.Int64
		wg      sync.WaitGroup
		slots   = make(chan struct{}, 512)
		total   = int(dur.Seconds() * float64(rate))
		every   = time.Second / time.Duration(rate)
		begin   = time.Now()
		printed atomic.Bool
	)
	for i := range total {
		due := begin.Add(time.Duration(i) * every)
		time.Sleep(time.Until(due))
		select {
		case slots <- struct{}{}:
		default:
			late++
			slots <- struct{}{}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			start := time.Now()
			p, err := cs.CoreV1().Pods(ns).Create(ctx, appPod(ns, fmt.Sprintf("web-%05d", i)), metav1.CreateOptions{})
			out.add(time.Since(start))
			if err == nil && wantInjected != (p.Annotations[inject.AnnotationInjected] != "") {
				err = fmt.Errorf("pod %s injected=%v, want %v", p.Name, !wantInjected, wantInjected)
			}
			if err != nil {
				nerr.Add(1)
				if printed.CompareAndSwap(false, true) {
					fmt.Fprintln(os.Stderr, "create:", err)
				}
			}
		}()
	}
	wg.Wait()
	return out.take(), int(nerr.Load()), late, total, time.Since(begin)
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }

func writeResults(o options, r *result) error {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# Injector admission latency\n\n")
	fmt.Fprintf(&b, "Generated by `make bench-inject` (`go run ./bench/inject`) on %s, %s, GOMAXPROCS=%d, %s.\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Fprintf(&b, "%d rounds; each runs both handlers, in alternating order. The machine is shared: compare within one run,\n", o.rounds)
	fmt.Fprintf(&b, "use the ratios, not the absolute numbers. Baseline: a no-op webhook that decodes the AdmissionReview and allows.\n")
	fmt.Fprintf(&b, "Load average (1/5/15 min) %s before, %s after, on %d CPUs: above the CPU count, tail latencies measure the queue for a CPU more than the code.\n", r.loadBefore, r.loadAfter, runtime.NumCPU())
	fmt.Fprintf(&b, "Pod: two containers, two httpGet probes, ports, a volume (what a Deployment typically creates).\n\n")

	fmt.Fprintf(&b, "Goal (issue 7): the webhook's own handling p99 ≤ 5 ms at 200 pod creations per second.\n\n")

	row := func(name string, d []time.Duration, base []time.Duration) string {
		ratio := func(p float64) string {
			if pct(base, p) == 0 {
				return "-"
			}
			return fmt.Sprintf("%.1f×", float64(pct(d, p))/float64(pct(base, p)))
		}
		return fmt.Sprintf("| %s | %d | %s | %s | %s | %s / %s |\n", name, len(d), ms(pct(d, 50)), ms(pct(d, 99)), ms(pct(d, 100)), ratio(50), ratio(99))
	}
	table := func(title string, m map[string][]time.Duration) {
		fmt.Fprintf(&b, "## %s\n\n| handler | samples | p50 ms | p99 ms | max ms | vs no-op p50 / p99 |\n|---|---:|---:|---:|---:|---:|\n", title)
		b.WriteString(row(weft, m[weft], m[noop]))
		b.WriteString(row(noop, m[noop], m[noop]))
		b.WriteString("\n")
	}
	table(fmt.Sprintf("Handler in process (%d goroutines, as fast as they go)", o.concurrency), r.inproc)
	table(fmt.Sprintf("Webhook handling, from the request's arrival to the response, at %d pods/s through the API server", o.rate), r.webhook)
	table(fmt.Sprintf("Webhook handling, from the body received to the response, at %d pods/s through the API server", o.rate), r.handled)
	table(fmt.Sprintf("Whole pod create, timed by the client, at %d pods/s", o.rate), r.create)

	fmt.Fprintf(&b, "| handler | pods | achieved pods/s | errors | started late |\n|---|---:|---:|---:|---:|\n")
	for _, name := range []string{weft, noop} {
		rate := float64(r.sent[name]) / r.elapsed[name].Seconds()
		fmt.Fprintf(&b, "| %s | %d | %.0f | %d | %d |\n", name, r.sent[name], rate, r.errors[name], r.late[name])
	}
	verdict := func(d time.Duration) string {
		if d > 5*time.Millisecond {
			return "NOT met"
		}
		return "met"
	}
	p99, h99 := pct(r.webhook[weft], 99), pct(r.handled[weft], 99)
	fmt.Fprintf(&b, "\nGoal, webhook p99 ≤ 5 ms at %d pods/s: from arrival %s ms (%s); from the body received %s ms (%s).\n",
		o.rate, ms(p99), verdict(p99), ms(h99), verdict(h99))
	fmt.Fprintf(&b, "\nThe webhook's time is measured inside the server, up to the response's write; TLS handshakes and the API server's own work are not in it. \"From arrival\" includes waiting for the API server to send the body; \"from the body received\" is the injector's own work (decode, decide, patch, encode). The whole create is what a controller creating a pod waits for: API server, webhook call, applying the patch, validation and etcd.\n")
	if err := os.MkdirAll(filepath.Dir(o.results), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(o.results, []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(b.String())
	return nil
}
