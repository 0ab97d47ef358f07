// Command upgrade benchmarks the operator's mesh upgrade at scale: a real
// kube-apiserver and etcd (envtest binaries), kube-controller-manager
// (Deployments → ReplicaSets → Pods), kwok playing the kubelet of a few fake
// nodes, and the real operator binary (bin/manager) as a process. It installs
// a MeshControlPlane at v1.0.0, creates N meshed Deployments, bumps
// spec.version and measures until the operator reports the upgrade
// complete: total time, time per batch, the most workloads unavailable at
// once (from a watch on every Deployment), and the operator's CPU and memory
// (from /proc) and API requests (from its metrics). Each entry of
// -batch-sizes is one more upgrade on the same cluster (v1.0.0 → v1.1.0 →
// v1.2.0 → v1.0.0 ...). Results go to -out.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controllers"
	"github.com/weftmesh/weft/internal/images"
	"github.com/weftmesh/weft/internal/procstat"
	"github.com/weftmesh/weft/internal/scheme"
	"github.com/weftmesh/weft/internal/testenv"
)

var (
	nDeployments   = flag.Int("deployments", 1000, "meshed Deployments")
	nNamespaces    = flag.Int("namespaces", 10, "application namespaces the Deployments are spread over")
	nNodes         = flag.Int("nodes", 5, "fake (kwok) nodes")
	nReplicas      = flag.Int("replicas", 1, "replicas of each Deployment")
	batchSizes     = flag.String("batch-sizes", "0,50", "one upgrade per entry, in order: spec.upgrade.batchSize (0 leaves the default)")
	maxUnavailable = flag.String("max-unavailable", "", "spec.upgrade.maxUnavailable for every upgrade (a count or a percentage; empty leaves the default)")
	out            = flag.String("out", "bench/upgrade/RESULTS.md", "results file")
	logDir         = flag.String("logs", "bench/out/upgrade", "directory for the logs of the processes")
	kwokBin        = flag.String("kwok", "bin/kwok-v0.8.0", "kwok binary (make kwok)")
	kwokVersion    = flag.String("kwok-version", "v0.8.0", "kwok module version whose stage files (kustomize/stage) are read from the Go module cache")
	managerBin     = flag.String("manager", "bin/manager", "operator binary (make bin/manager)")
	kcmBin         = flag.String("kube-controller-manager", "", "kube-controller-manager binary (default: next to the envtest binaries)")
	kcmQPS         = flag.Int("kcm-qps", 100, "kube-controller-manager --kube-api-qps (burst is twice this)")
	runTimeout     = flag.Duration("run-timeout", 45*time.Minute, "give up on one upgrade after this long")
	settle         = flag.Duration("settle", 10*time.Second, "quiet time before and after each upgrade (the operator's idle CPU and RSS)")
)

const (
	meshName  = "mesh"
	meshNS    = "weft-system"
	kwokAnnot = "kwok.x-k8s.io/node"
)

var versions = []string{"v1.0.0", "v1.1.0", "v1.2.0"}

func main() {
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "bench-upgrade:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// bench is the running cluster.
type bench struct {
	env       *testenv.Env
	cfg       *rest.Config
	c         client.WithWatch
	kube      kubernetes.Interface
	kcm       *proc
	kwok      *proc
	operator  *proc
	opMetrics string
	adm       *admission
	track     *tracker
	res       results
}

func run(ctx context.Context) error {
	var sizes []int
	for _, s := range strings.Split(*batchSizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 || n > 1000 {
			return fmt.Errorf("-batch-sizes: %q is not a batch size (0..1000)", s)
		}
		sizes = append(sizes, n)
	}
	stages, err := kwokStageFiles()
	if err != nil {
		return err
	}
	for _, bin := range []string{*kwokBin, *managerBin} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%w (make kwok bin/manager)", err)
		}
	}
	if err := os.MkdirAll(*logDir, 0o755); err != nil {
		return err
	}
	b := &bench{track: newTracker()}
	b.res.started = time.Now()
	b.res.loadStart = procstat.LoadAverage()
	b.res.commit = gitCommit()
	defer b.stop()
	if err := b.start(ctx, stages); err != nil {
		return err
	}
	if err := b.populate(ctx); err != nil {
		return err
	}
	for i, size := range sizes {
		from, to := versions[i%len(versions)], versions[(i+1)%len(versions)]
		r, err := b.upgrade(ctx, from, to, size)
		b.res.runs = append(b.res.runs, r)
		if werr := b.res.write(*out); werr != nil {
			return werr
		}
		if err != nil {
			return err
		}
	}
	b.res.loadEnd = procstat.LoadAverage()
	logf("results in %s", *out)
	return b.res.write(*out)
}

func kwokStageFiles() ([]string, error) {
	modcache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOMODCACHE: %w", err)
	}
	dir := strings.TrimSpace(string(modcache))
	base := filepath.Join(dir, "sigs.k8s.io", "kwok@"+*kwokVersion, "kustomize", "stage")
	files := []string{
		"node/fast/node-initialize.yaml",
		"node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
		"pod/fast/pod-ready.yaml",
		"pod/fast/pod-complete.yaml",
		"pod/fast/pod-delete.yaml",
	}
	for i, f := range files {
		files[i] = filepath.Join(base, f)
		if _, err := os.Stat(files[i]); err != nil {
			return nil, fmt.Errorf("kwok's stage files: %w (make kwok downloads the module)", err)
		}
	}
	return files, nil
}

func (b *bench) stop() {
	b.operator.stop()
	b.kwok.stop()
	b.kcm.stop()
	if b.env != nil {
		_ = b.env.Stop()
	}
}

func (b *bench) start(ctx context.Context, stages []string) error {
	logf("starting kube-apiserver and etcd")
	env, err := testenv.Start(testenv.Options{})
	if err != nil {
		return err
	}
	b.env = env
	b.cfg = rest.CopyConfig(env.Config)
	b.cfg.QPS, b.cfg.Burst = 500, 1000
	if b.c, err = client.NewWithWatch(b.cfg, client.Options{Scheme: scheme.New()}); err != nil {
		return err
	}
	if b.kube, err = kubernetes.NewForConfig(b.cfg); err != nil {
		return err
	}
	admin, err := env.Environment().AddUser(envtest.User{Name: "bench-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfig := absPath(filepath.Join(*logDir, "admin.kubeconfig"))
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return err
	}

	kcm := *kcmBin
	if kcm == "" {
		assets, err := testenv.AssetsDir()
		if err != nil {
			return err
		}
		kcm = filepath.Join(assets, "kube-controller-manager")
	}
	logf("starting kube-controller-manager")
	b.kcm, err = startProc("kube-controller-manager", filepath.Join(*logDir, "kube-controller-manager.log"), nil, kcm,
		"--kubeconfig="+kubeconfig,
		"--authentication-kubeconfig="+kubeconfig,
		"--authorization-kubeconfig="+kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=0",
		"--controllers=deployment-controller,replicaset-controller,garbage-collector-controller",
		fmt.Sprintf("--kube-api-qps=%d", *kcmQPS),
		fmt.Sprintf("--kube-api-burst=%d", 2**kcmQPS),
	)
	if err != nil {
		return fmt.Errorf("%w (make kube-controller-manager)", err)
	}

	var nodes []string
	for i := range *nNodes {
		name := fmt.Sprintf("kwok-node-%d", i)
		nodes = append(nodes, name)
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{kwokAnnot: "fake"},
			Labels:      map[string]string{"type": "kwok", corev1.LabelHostname: name},
		}}
		if err := b.c.Create(ctx, node); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	logf("starting kwok for %d nodes", len(nodes))
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--manage-nodes-with-annotation-selector=" + kwokAnnot + "=fake",
		"--cidr=10.0.0.0/16",
		"--node-ip=10.255.0.1",
		"--server-address=" + freeAddr(),
	}
	for _, s := range stages {
		args = append(args, "--config="+s)
	}
	if b.kwok, err = startProc("kwok", filepath.Join(*logDir, "kwok.log"), nil, *kwokBin, args...); err != nil {
		return err
	}
	if err := waitFor(ctx, "the fake nodes are Ready", 2*time.Minute, func() (bool, error) {
		var list corev1.NodeList
		if err := b.c.List(ctx, &list); err != nil {
			return false, err
		}
		ready := 0
		for _, n := range list.Items {
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		return ready == len(nodes), nil
	}, b.kwok); err != nil {
		return err
	}

	// The scheduler and injector stand-in.
	b.adm = newAdmission(nodes)
	addr, ca, err := b.adm.serve(ctx)
	if err != nil {
		return err
	}
	if err := b.c.Create(ctx, webhookConfiguration(addr, ca)); err != nil {
		return err
	}
	b.watchInjector(ctx)

	logf("starting the operator (%s)", *managerBin)
	metricsAddr, probeAddr := freeAddr(), freeAddr()
	b.opMetrics = "http://" + metricsAddr + "/metrics"
	b.operator, err = startProc("operator", filepath.Join(*logDir, "operator.log"), []string{"KUBECONFIG=" + kubeconfig}, *managerBin,
		"--leader-elect=false",
		"--metrics-bind-address="+metricsAddr,
		"--metrics-insecure",
		"--health-probe-bind-address="+probeAddr,
	)
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, b.operator, "http://"+probeAddr+"/readyz", 2*time.Minute); err != nil {
		return err
	}
	b.res.opStart = readProcStat(b.operator.pid())
	return nil
}

// watchInjector keeps the stand-in injector on the revision the operator's
// webhook configuration points at, as the API server would.
func (b *bench) watchInjector(ctx context.Context) {
	f := informers.NewSharedInformerFactoryWithOptions(b.kube, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", controllers.WebhookConfigName).String()
	}))
	inf := f.Admissionregistration().V1().MutatingWebhookConfigurations().Informer()
	set := func(obj any) {
		if m, ok := obj.(*admissionregistrationv1.MutatingWebhookConfiguration); ok {
			b.adm.setRevision(m.Labels[meshv1alpha1.LabelRevision])
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, n any) { set(n) },
		DeleteFunc: func(any) { b.adm.setRevision("") },
	})
	f.Start(ctx.Done())
}

func (b *bench) watchDeployments(ctx context.Context) error {
	f := informers.NewSharedInformerFactoryWithOptions(b.kube, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = benchLabel
	}))
	inf := f.Apps().V1().Deployments().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if d, ok := obj.(*appsv1.Deployment); ok {
				b.track.update(d, time.Now())
			}
		},
		UpdateFunc: func(_, obj any) {
			if d, ok := obj.(*appsv1.Deployment); ok {
				b.track.update(d, time.Now())
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(*appsv1.Deployment); ok {
				b.track.remove(d.Namespace+"/"+d.Name, time.Now())
			}
		},
	})
	if err != nil {
		return err
	}
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	return nil
}

func appNamespace(i int) string { return fmt.Sprintf("bench-app-%d", i) }

// populate installs the mesh at v1.0.0 and the meshed Deployments, and waits
// until every one is available on revision v1-0-0.
func (b *bench) populate(ctx context.Context) error {
	mesh := &meshv1alpha1.MeshControlPlane{
		ObjectMeta: metav1.ObjectMeta{Name: meshName},
		Spec:       meshv1alpha1.MeshControlPlaneSpec{Version: versions[0], Namespace: meshNS},
	}
	if *maxUnavailable != "" {
		mesh.Spec.Upgrade.MaxUnavailable = intstr.Parse(*maxUnavailable)
	}
	t0 := time.Now()
	if err := b.c.Create(ctx, mesh); err != nil {
		return err
	}
	logf("installing MeshControlPlane %s at %s", meshName, versions[0])
	if err := waitFor(ctx, "the mesh is Ready", 5*time.Minute, func() (bool, error) {
		m := &meshv1alpha1.MeshControlPlane{}
		if err := b.c.Get(ctx, client.ObjectKey{Name: meshName}, m); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(m.Status.Conditions, meshv1alpha1.ConditionReady), nil
	}, b.operator); err != nil {
		return err
	}
	b.res.install = time.Since(t0)
	logf("mesh Ready after %s", b.res.install.Round(time.Millisecond))

	for i := range *nNamespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appNamespace(i), Labels: map[string]string{meshv1alpha1.LabelInject: "enabled"}}}
		if err := b.c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	if err := b.watchDeployments(ctx); err != nil {
		return err
	}
	logf("creating %d Deployments (%d replica(s) each) in %d namespaces", *nDeployments, *nReplicas, *nNamespaces)
	t0 = time.Now()
	work := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			for i := range work {
				if err := b.c.Create(ctx, benchDeployment(i)); err != nil && !apierrors.IsAlreadyExists(err) {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for i := range *nDeployments {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return fmt.Errorf("creating Deployments: %w", err)
	default:
	}
	logf("created in %s; waiting until all are available", time.Since(t0).Round(time.Millisecond))
	last := time.Now()
	if err := waitFor(ctx, "every Deployment is available", 20*time.Minute, func() (bool, error) {
		s := b.track.snapshot()
		if time.Since(last) > 10*time.Second {
			logf("  %d of %d Deployments available", s.complete, *nDeployments)
			last = time.Now()
		}
		return s.total == *nDeployments && s.complete == *nDeployments, nil
	}, b.kcm, b.kwok, b.operator); err != nil {
		return err
	}
	b.res.populate = time.Since(t0)
	logf("all %d Deployments available after %s", *nDeployments, b.res.populate.Round(time.Millisecond))
	return b.checkPods(ctx, images.Revision(versions[0]))
}

// checkPods makes sure every bench pod runs revision rev.
func (b *bench) checkPods(ctx context.Context, rev string) error {
	var pods corev1.PodList
	if err := b.c.List(ctx, &pods, client.HasLabels{benchLabel}); err != nil {
		return err
	}
	other := 0
	for _, p := range pods.Items {
		if p.Labels[meshv1alpha1.LabelRevision] != rev {
			other++
		}
	}
	if other > 0 {
		return fmt.Errorf("%d of %d bench pods do not run revision %s", other, len(pods.Items), rev)
	}
	return nil
}

func benchDeployment(i int) *appsv1.Deployment {
	name := fmt.Sprintf("app-%04d", i)
	labels := map[string]string{"app": name, benchLabel: "true"}
	podLabels := map[string]string{"app": name, benchLabel: "true",
		// The operator's webhook configuration skips these pods (see
		// admission): the stand-in injects them.
		meshv1alpha1.LabelInject: "disabled"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNamespace(i % *nNamespaces), Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(*nReplicas)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}},
					// kwok deletes a terminating pod at once; a kubelet
					// would wait for the containers to stop.
					TerminationGracePeriodSeconds: ptr.To[int64](1),
				},
			},
		},
	}
}

// waitFor polls cond every 200 ms; it fails early when a process it depends
// on exits.
func waitFor(ctx context.Context, what string, timeout time.Duration, cond func() (bool, error), procs ...*proc) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		for _, p := range procs {
			if p != nil && p.exited() {
				return fmt.Errorf("waiting until %s: %s exited (see %s)", what, p.name, p.log.Name())
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting until %s (last error: %v)", timeout, what, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// phaseEvent is a change of status.upgrade seen through the watch.
type phaseEvent struct {
	at      time.Time
	phase   meshv1alpha1.UpgradePhase
	batch   int32
	updated int32
}

// upgrade bumps spec.version from → to with the batch size and measures
// until status.upgrade says Complete.
func (b *bench) upgrade(ctx context.Context, from, to string, batchSize int) (runResult, error) {
	r := runResult{from: from, to: to, batchSize: batchSize, workloads: *nDeployments}
	logf("upgrade %s → %s, batchSize %s: settling %s", from, to, orDefault(batchSize), *settle)
	pid := b.operator.pid()
	s0 := readProcStat(pid)
	time.Sleep(*settle)
	r.before = readProcStat(pid)
	r.idleCPU = (r.before.cpu - s0.cpu) / r.before.at.Sub(s0.at).Seconds()
	r.loadBefore = procstat.LoadAverage()
	opM0 := scrapeHTTP(b.opMetrics)
	apiM0 := b.scrapeAPIServer(ctx)

	m := &meshv1alpha1.MeshControlPlane{}
	if err := b.c.Get(ctx, client.ObjectKey{Name: meshName}, m); err != nil {
		return r, err
	}
	r.effective, r.maxUnavailableSetting = effectiveBatch(m, batchSize, *nDeployments)

	// Sample the operator process while the upgrade runs.
	sctx, stopSampling := context.WithCancel(ctx)
	samples := make(chan []procStat, 1)
	go func() {
		var ss []procStat
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				samples <- ss
				return
			case <-t.C:
				ss = append(ss, readProcStat(pid))
			}
		}
	}()
	// Follow status.upgrade through a watch.
	phases := make(chan []phaseEvent, 1)
	complete := make(chan time.Time, 1)
	go b.watchUpgrade(sctx, to, phases, complete)

	b.track.reset(images.Revision(to))
	batch := "null"
	if batchSize > 0 {
		batch = strconv.Itoa(batchSize)
	}
	patch := fmt.Sprintf(`{"spec":{"version":%q,"upgrade":{"batchSize":%s}}}`, to, batch)
	t0 := time.Now()
	if err := b.c.Patch(ctx, &meshv1alpha1.MeshControlPlane{ObjectMeta: metav1.ObjectMeta{Name: meshName}}, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		stopSampling()
		return r, err
	}
	r.started = t0
	var runErr error
	last := time.Now()
	deadline := time.NewTimer(*runTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
wait:
	for {
		select {
		case at := <-complete:
			r.total = at.Sub(t0)
			r.completed = true
			break wait
		case <-deadline.C:
			runErr = fmt.Errorf("upgrade %s → %s not complete after %s", from, to, *runTimeout)
			break wait
		case <-ctx.Done():
			runErr = ctx.Err()
			break wait
		case <-tick.C:
			if b.operator.exited() {
				runErr = fmt.Errorf("the operator exited during the upgrade (see %s)", b.operator.log.Name())
				break wait
			}
			if time.Since(last) >= 15*time.Second {
				s := b.track.snapshot()
				logf("  %s: %d Deployments restarted, %d rolled out, %d mid-rollout (max %d), %d with unavailable replicas (max %d)",
					time.Since(t0).Round(time.Second), s.restartedForTarget, s.restartedForTarget-(s.incomplete), s.incomplete, s.maxIncomplete, s.unavailable, s.maxUnavailable)
				last = time.Now()
			}
		}
	}
	if runErr != nil {
		r.total = time.Since(t0)
	}
	r.during = readProcStat(pid)
	r.snap = b.track.snapshot()
	if r.completed {
		logf("upgrade %s → %s complete after %s; settling %s", from, to, r.total.Round(time.Millisecond), *settle)
		time.Sleep(*settle)
	}
	stopSampling()
	r.samples = <-samples
	r.phases = <-phases
	r.after = readProcStat(pid)
	r.loadAfter = procstat.LoadAverage()
	r.opRequests = sub(sumBy(scrapeHTTP(b.opMetrics), "rest_client_requests_total", "method"), sumBy(opM0, "rest_client_requests_total", "method"))
	opM1 := scrapeHTTP(b.opMetrics)
	r.reconciles = total(sub(sumBy(opM1, "controller_runtime_reconcile_total", "controller"), sumBy(opM0, "controller_runtime_reconcile_total", "controller")))
	r.reconcileErrors = sub(sumBy(opM1, "controller_runtime_reconcile_errors_total", ""), sumBy(opM0, "controller_runtime_reconcile_errors_total", ""))[""]
	r.reconcileSeconds = sub(sumBy(opM1, "controller_runtime_reconcile_time_seconds_sum", ""), sumBy(opM0, "controller_runtime_reconcile_time_seconds_sum", ""))[""]
	apiM1 := b.scrapeAPIServer(ctx)
	r.apiByVerb = sub(sumBy(apiM1, "apiserver_request_total", "verb"), sumBy(apiM0, "apiserver_request_total", "verb"))
	r.apiByResource = sub(sumBy(apiM1, "apiserver_request_total", "resource"), sumBy(apiM0, "apiserver_request_total", "resource"))
	r.admitted, _ = b.adm.counts()
	if runErr == nil {
		if err := b.checkPods(ctx, images.Revision(to)); err != nil {
			r.notes = append(r.notes, err.Error())
		}
		err := b.c.Get(ctx, client.ObjectKey{Namespace: meshNS, Name: controllers.RevisionObjectName(images.Revision(from))}, &appsv1.Deployment{})
		if !apierrors.IsNotFound(err) {
			r.notes = append(r.notes, fmt.Sprintf("the old revision's Deployment is still there (%v)", err))
		}
	}
	logf("upgrade %s → %s: %d batches, most Deployments mid-rollout at once %d, with unavailable replicas %d (effective batch %d)",
		from, to, len(r.snap.batches), r.snap.maxIncomplete, r.snap.maxUnavailable, r.effective)
	return r, runErr
}

func orDefault(n int) string {
	if n == 0 {
		return "default"
	}
	return strconv.Itoa(n)
}

// effectiveBatch is what the operator restarts at once: batchSize, capped by
// maxUnavailable (scaled to the number of workloads, rounded up), as
// controllers.batchSize computes it.
func effectiveBatch(m *meshv1alpha1.MeshControlPlane, batchSize, workloads int) (int, string) {
	n := batchSize
	if n == 0 {
		n = 5 // the schema's default
	}
	mu := m.Spec.Upgrade.MaxUnavailable
	if mu.Type == intstr.Int && mu.IntVal == 0 && mu.StrVal == "" {
		mu = intstr.FromString("25%")
	}
	v, err := intstr.GetScaledValueFromIntOrPercent(&mu, workloads, true)
	if err == nil && v >= 1 && v < n {
		n = v
	}
	setting := mu.String()
	if err == nil && mu.Type == intstr.String {
		setting = fmt.Sprintf("%s (= %d of %d)", mu.StrVal, v, workloads)
	}
	return n, setting
}

// watchUpgrade records status.upgrade changes and reports the time the
// upgrade to version to is Complete.
func (b *bench) watchUpgrade(ctx context.Context, to string, phases chan<- []phaseEvent, complete chan<- time.Time) {
	var evs []phaseEvent
	defer func() { phases <- evs }()
	done := false
	for ctx.Err() == nil {
		w, err := b.c.Watch(ctx, &meshv1alpha1.MeshControlPlaneList{}, client.MatchingFields{"metadata.name": meshName})
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		for ev := range w.ResultChan() {
			m, ok := ev.Object.(*meshv1alpha1.MeshControlPlane)
			if !ok || m.Status.Upgrade == nil || m.Status.Upgrade.To != to {
				continue
			}
			u := m.Status.Upgrade
			if n := len(evs); n == 0 || evs[n-1].phase != u.Phase || evs[n-1].batch != u.Batch || evs[n-1].updated != u.WorkloadsUpdated {
				evs = append(evs, phaseEvent{at: time.Now(), phase: u.Phase, batch: u.Batch, updated: u.WorkloadsUpdated})
			}
			if u.Phase == meshv1alpha1.UpgradePhase("Complete") && !done {
				done = true
				complete <- time.Now()
			}
		}
		w.Stop()
	}
}

func (b *bench) scrapeAPIServer(ctx context.Context) []series {
	raw, err := b.kube.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil
	}
	return parseMetrics(strings.NewReader(string(raw)))
}

func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}
