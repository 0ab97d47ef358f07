package harness

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/test/netns"
)

// kubelet runs the pods bound to our node: one network namespace per pod,
// its init containers, native sidecars and containers as processes, volumes
// as directories bind-mounted in a private mount namespace, probes, and the
// pod status the EndpointSlice controller reads.
type kubelet struct {
	c     *Cluster
	queue workqueue.TypedRateLimitingInterface[string]
	store cache.Store

	mu    sync.Mutex
	pods  map[types.UID]*podRun
	slots [255]bool
}

func newKubelet(c *Cluster) *kubelet {
	return &kubelet{
		c:     c,
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		pods:  map[types.UID]*podRun{},
	}
}

func (k *kubelet) run(ctx context.Context) {
	f := informers.NewSharedInformerFactory(k.c.Kube, 0)
	inf := f.Core().V1().Pods().Informer()
	k.store = inf.GetStore()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }, DeleteFunc: enqueue})
	f.Start(ctx.Done())
	cache.WaitForCacheSync(ctx.Done(), inf.HasSynced)
	go func() { <-ctx.Done(); k.queue.ShutDown() }()
	for {
		key, quit := k.queue.Get()
		if quit {
			return
		}
		if err := k.sync(ctx, key); err != nil {
			k.c.errorf("kubelet: %s: %v", key, err)
			k.queue.AddRateLimited(key)
		} else {
			k.queue.Forget(key)
		}
		k.queue.Done(key)
	}
}

func (k *kubelet) sync(ctx context.Context, key string) error {
	obj, exists, err := k.store.GetByKey(key)
	if err != nil {
		return err
	}
	if !exists {
		k.stopByKey(key)
		return nil
	}
	pod := obj.(*corev1.Pod)
	switch {
	case pod.DeletionTimestamp != nil:
		if r := k.get(pod.UID); r != nil {
			go func() {
				r.stop(pod.DeletionGracePeriodSeconds)
				k.forget(r)
				k.finalize(pod)
			}()
			return nil
		}
		k.finalize(pod)
	case pod.Spec.NodeName == "":
		return k.c.Kube.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: NodeName},
		}, metav1.CreateOptions{})
	case pod.Spec.NodeName != NodeName:
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
	default:
		if k.get(pod.UID) == nil {
			r, err := k.admit(pod)
			if err != nil {
				k.failPod(pod, err)
				return nil
			}
			go r.run()
		}
	}
	return nil
}

// finalize removes a terminated pod the way a kubelet does: a delete with
// no grace period once its containers are gone.
func (k *kubelet) finalize(pod *corev1.Pod) {
	err := k.c.Kube.CoreV1().Pods(pod.Namespace).Delete(context.Background(), pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		k.c.errorf("kubelet: deleting %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}

func (k *kubelet) get(uid types.UID) *podRun {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.pods[uid]
}

func (k *kubelet) stopByKey(key string) {
	k.mu.Lock()
	var found *podRun
	for _, r := range k.pods {
		if r.key == key {
			found = r
		}
	}
	k.mu.Unlock()
	if found != nil {
		found.stop(ptr.To[int64](0))
		k.forget(found)
	}
}

func (k *kubelet) forget(r *podRun) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.pods, r.uid)
	k.slots[r.slot] = false
}

func (k *kubelet) stopAll() {
	k.mu.Lock()
	var all []*podRun
	for _, r := range k.pods {
		all = append(all, r)
	}
	k.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range all {
		wg.Add(1)
		go func() { defer wg.Done(); r.stop(ptr.To[int64](1)); k.forget(r) }()
	}
	wg.Wait()
}

func (k *kubelet) failPod(pod *corev1.Pod, cause error) {
	k.c.errorf("kubelet: pod %s/%s cannot run: %v", pod.Namespace, pod.Name, cause)
	_ = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p, err := k.c.Kube.CoreV1().Pods(pod.Namespace).Get(context.Background(), pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		p.Status.Phase = corev1.PodFailed
		p.Status.Reason = "HarnessError"
		p.Status.Message = cause.Error()
		_, err = k.c.Kube.CoreV1().Pods(pod.Namespace).UpdateStatus(context.Background(), p, metav1.UpdateOptions{})
		return err
	})
}

// admit allocates the pod's network and directory.
func (k *kubelet) admit(pod *corev1.Pod) (*podRun, error) {
	k.mu.Lock()
	slot := 0
	for i := 1; i < len(k.slots); i++ {
		if !k.slots[i] {
			slot = i
			break
		}
	}
	if slot == 0 {
		k.mu.Unlock()
		return nil, fmt.Errorf("the node is full (254 pods)")
	}
	k.slots[slot] = true
	ctx, cancel := context.WithCancel(context.Background())
	r := &podRun{
		k: k, uid: pod.UID, key: pod.Namespace + "/" + pod.Name, pod: pod.DeepCopy(), slot: slot,
		netns: fmt.Sprintf("%s-p%d", nodeName(), slot),
		ip:    fmt.Sprintf("10.244.%d.2", slot),
		dir:   filepath.Join(k.c.dir, "pods", pod.Namespace+"_"+pod.Name+"_"+string(pod.UID)[:8]),
		ctx:   ctx, cancel: cancel,
		procs: map[string]*proc{}, ready: map[string]bool{}, started: map[string]bool{}, restarts: map[string]int32{},
		done: make(chan struct{}),
	}
	k.pods[pod.UID] = r
	k.mu.Unlock()
	return r, nil
}

// podRun is one running pod.
type podRun struct {
	k     *kubelet
	uid   types.UID
	key   string
	pod   *corev1.Pod
	slot  int
	netns string
	ip    string
	dir   string

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu       sync.Mutex
	procs    map[string]*proc
	ready    map[string]bool
	started  map[string]bool
	restarts map[string]int32
	initDone bool
	failed   string
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (r *podRun) logf(format string, args ...any) {
	r.k.c.errorf("pod %s: "+format, append([]any{r.key}, args...)...)
}

func (r *podRun) run() {
	defer close(r.done)
	if err := r.setupNetwork(); err != nil {
		r.fail(fmt.Errorf("network: %w", err))
		return
	}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		r.fail(err)
		return
	}
	if err := r.syncVolumes(true); err != nil {
		r.fail(fmt.Errorf("volumes: %w", err))
		return
	}
	r.pushStatus()
	go r.refreshVolumes()

	for _, c := range r.pod.Spec.InitContainers {
		if r.ctx.Err() != nil {
			return
		}
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			// A native sidecar: started, kept running, and the next
			// container waits for its startup probe.
			go r.supervise(c)
			if !r.waitStarted(c) {
				return
			}
			continue
		}
		if err := r.runToCompletion(c); err != nil {
			r.fail(fmt.Errorf("init container %s: %w", c.Name, err))
			return
		}
	}
	r.mu.Lock()
	r.initDone = true
	r.mu.Unlock()
	for _, c := range r.pod.Spec.Containers {
		go r.supervise(c)
	}
	t := time.NewTicker(300 * time.Millisecond)
	defer t.Stop()
	for {
		r.probeAll()
		r.pushStatus()
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *podRun) fail(err error) {
	r.mu.Lock()
	r.failed = err.Error()
	r.mu.Unlock()
	r.logf("%v", err)
	r.pushStatus()
}

func (r *podRun) setupNetwork() error {
	host := fmt.Sprintf("vp%d", r.slot)
	steps := [][]string{
		{"ip", "netns", "add", r.netns},
		{"ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", r.netns},
		{"ip", "addr", "add", fmt.Sprintf("10.244.%d.1/24", r.slot), "dev", host},
		{"ip", "link", "set", host, "up"},
		{"ip", "netns", "exec", r.netns, "ip", "link", "set", "lo", "up"},
		{"ip", "netns", "exec", r.netns, "ip", "addr", "add", r.ip + "/24", "dev", "eth0"},
		{"ip", "netns", "exec", r.netns, "ip", "link", "set", "eth0", "up"},
		{"ip", "netns", "exec", r.netns, "ip", "route", "add", "default", "via", fmt.Sprintf("10.244.%d.1", r.slot)},
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// stop terminates the containers as the kubelet does with native
// sidecars: SIGTERM to the regular containers first, then, once they have
// exited, to the sidecars (init containers with restartPolicy Always), so
// that the proxy outlives the application it fronts; SIGKILL to whatever is
// left when the grace period (at most 5 s here) ends. Then it removes the
// pod's network.
func (r *podRun) stop(grace *int64) {
	r.once.Do(func() {
		r.cancel()
		g := 5 * time.Second
		if grace != nil && time.Duration(*grace)*time.Second < g {
			g = time.Duration(*grace) * time.Second
		}
		sidecars := map[string]bool{}
		for _, c := range r.pod.Spec.InitContainers {
			if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
				sidecars[c.Name] = true
			}
		}
		r.mu.Lock()
		var apps, side []*proc
		for name, p := range r.procs {
			if sidecars[name] {
				side = append(side, p)
			} else {
				apps = append(apps, p)
			}
		}
		r.mu.Unlock()
		deadline := time.After(g)
		killed := false
		terminate := func(procs []*proc) {
			for _, p := range procs {
				_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
			}
			for _, p := range procs {
				if killed {
					_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
					<-p.done
					continue
				}
				select {
				case <-p.done:
				case <-deadline:
					killed = true
					_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
					<-p.done
				}
			}
		}
		terminate(apps)
		terminate(side)
		<-r.done
		if out, err := exec.Command("ip", "netns", "pids", r.netns).Output(); err == nil {
			for _, pid := range strings.Fields(string(out)) {
				_ = run("kill", "-9", pid)
			}
		}
		_ = run("ip", "netns", "delete", r.netns)
	})
}

// supervise keeps a container running (restartPolicy Always; the pod's
// policy for regular containers) until the pod stops.
func (r *podRun) supervise(c corev1.Container) {
	backoff := time.Second
	for r.ctx.Err() == nil {
		p, err := r.start(c)
		if err != nil {
			r.fail(fmt.Errorf("container %s: %w", c.Name, err))
			return
		}
		r.mu.Lock()
		r.started[c.Name] = true
		r.mu.Unlock()
		select {
		case <-r.ctx.Done():
			<-p.done
			return
		case <-p.done:
		}
		r.mu.Lock()
		r.started[c.Name], r.ready[c.Name] = false, false
		r.restarts[c.Name]++
		r.mu.Unlock()
		r.logf("container %s exited: %v (restarting in %s)", c.Name, p.err, backoff)
		if r.pod.Spec.RestartPolicy == corev1.RestartPolicyNever && c.RestartPolicy == nil {
			return
		}
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (r *podRun) runToCompletion(c corev1.Container) error {
	for attempt := 0; ; attempt++ {
		p, err := r.start(c)
		if err != nil {
			return err
		}
		<-p.done
		if p.err == nil {
			return nil
		}
		if r.ctx.Err() != nil || attempt >= 2 {
			return fmt.Errorf("exited: %v (log: %s)", p.err, r.logPath(c.Name))
		}
		time.Sleep(time.Second)
	}
}

// waitStarted waits for a sidecar's startup probe (or for it to run, when
// it has none).
func (r *podRun) waitStarted(c corev1.Container) bool {
	for {
		if r.ctx.Err() != nil {
			return false
		}
		r.mu.Lock()
		started := r.started[c.Name]
		r.mu.Unlock()
		if started && (c.StartupProbe == nil || r.probe(c, c.StartupProbe)) {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (r *podRun) logPath(container string) string {
	return filepath.Join(r.dir, container+".log")
}

var imageName = regexp.MustCompile(`([^/:@]+)(?::([^/@]*))?(?:@.*)?$`)

// binaryFor maps a container to the binary built for its image and the
// arguments to give it.
func (r *podRun) binaryFor(c corev1.Container) (string, []string, error) {
	m := imageName.FindStringSubmatch(c.Image)
	if m == nil {
		return "", nil, fmt.Errorf("image %q", c.Image)
	}
	name := m[1]
	if name == "weft" {
		name = "manager" // the operator image's entrypoint
	}
	args := c.Args
	if len(c.Command) > 0 {
		args = append(append([]string{}, c.Command[1:]...), c.Args...)
		base := path.Base(c.Command[0])
		if _, known := binaries[base]; known {
			name = base
		} else if filepath.IsAbs(c.Command[0]) {
			// A command from the host, e.g. /bin/sleep in a test pod.
			return c.Command[0], args, nil
		}
	}
	bin, err := r.k.c.BinaryVersion(name, m[2])
	return bin, args, err
}

// start runs one container: in the pod's network namespace, in a private
// mount namespace with its volumes bind-mounted and the pod's /etc/hosts,
// as the container's user.
func (r *podRun) start(c corev1.Container) (*proc, error) {
	bin, args, err := r.binaryFor(c)
	if err != nil {
		return nil, err
	}
	env, err := r.env(c)
	if err != nil {
		return nil, err
	}
	var script strings.Builder
	script.WriteString("set -e\n")
	for _, m := range c.VolumeMounts {
		src := filepath.Join(r.dir, "volumes", m.Name, m.SubPath)
		fmt.Fprintf(&script, "mkdir -p %q && mount --bind %q %q\n", m.MountPath, src, m.MountPath)
	}
	fmt.Fprintf(&script, "mount --bind %q /etc/hosts\n", filepath.Join(r.dir, "hosts"))
	uid, args, env := asUser(netns.UIDMapped, bin, r.runAsUser(c), args, env)
	if uid != 0 {
		// A change of user clears the parent-death signal; keep it, or
		// the container outlives a test binary that dies (go test's
		// timeout) and holds its ports on the next run.
		fmt.Fprintf(&script, "exec setpriv --reuid=%d --regid=%d --clear-groups --inh-caps=-all --pdeathsig keep -- \"$@\"\n", uid, uid)
	} else {
		script.WriteString("exec \"$@\"\n")
	}
	cmdArgs := append([]string{"netns", "exec", r.netns, "unshare", "-m", "--propagation", "private", "sh", "-c", script.String(), "sh", bin}, args...)
	cmd := exec.Command("ip", cmdArgs...)
	cmd.Env = env
	cmd.Dir = "/"
	f, err := os.OpenFile(r.logPath(c.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	r.mu.Lock()
	r.procs[c.Name] = p
	r.mu.Unlock()
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (r *podRun) runAsUser(c corev1.Container) int64 {
	if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
		return *c.SecurityContext.RunAsUser
	}
	if sc := r.pod.Spec.SecurityContext; sc != nil && sc.RunAsUser != nil {
		return *sc.RunAsUser
	}
	return 0
}

var fieldLabel = regexp.MustCompile(`^metadata\.(labels|annotations)\['([^']+)'\]$`)

// env resolves the container's environment like the kubelet (values,
// downward API fields, Secret and ConfigMap keys), plus the API server
// address for in-cluster clients, which have no cluster DNS here.
func (r *podRun) env(c corev1.Container) ([]string, error) {
	pod := r.pod
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOSTNAME=" + pod.Name,
		// As container runtimes do for a user without a home in the image.
		// Without it, in-cluster clients look for the host user's
		// ~/.kube/config, which is unreadable in a user namespace.
		"HOME=/",
		"KUBERNETES_SERVICE_HOST=" + NodeIP,
		"KUBERNETES_SERVICE_PORT=" + r.k.c.apiPort(),
	}
	if r.hasAPIToken() {
		env = append(env, "KUBECONFIG="+filepath.Join(r.dir, "kubeconfig"))
	}
	ctx := context.Background()
	for _, e := range c.Env {
		v := e.Value
		if s := e.ValueFrom; s != nil {
			switch {
			case s.FieldRef != nil:
				fp := s.FieldRef.FieldPath
				switch fp {
				case "metadata.name":
					v = pod.Name
				case "metadata.namespace":
					v = pod.Namespace
				case "metadata.uid":
					v = string(pod.UID)
				case "spec.serviceAccountName":
					v = pod.Spec.ServiceAccountName
				case "spec.nodeName":
					v = NodeName
				case "status.podIP", "status.podIPs":
					v = r.ip
				case "status.hostIP", "status.hostIPs":
					v = NodeIP
				default:
					m := fieldLabel.FindStringSubmatch(fp)
					if m == nil {
						return nil, fmt.Errorf("env %s: field %s is not supported by the harness", e.Name, fp)
					}
					if m[1] == "labels" {
						v = pod.Labels[m[2]]
					} else {
						v = pod.Annotations[m[2]]
					}
				}
			case s.SecretKeyRef != nil:
				sec, err := r.k.c.Kube.CoreV1().Secrets(pod.Namespace).Get(ctx, s.SecretKeyRef.Name, metav1.GetOptions{})
				if err != nil {
					return nil, fmt.Errorf("env %s: %w", e.Name, err)
				}
				v = string(sec.Data[s.SecretKeyRef.Key])
			case s.ConfigMapKeyRef != nil:
				cm, err := r.k.c.Kube.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, s.ConfigMapKeyRef.Name, metav1.GetOptions{})
				if err != nil {
					return nil, fmt.Errorf("env %s: %w", e.Name, err)
				}
				v = cm.Data[s.ConfigMapKeyRef.Key]
			case s.ResourceFieldRef != nil:
				v = "0"
			}
		}
		env = append(env, e.Name+"="+v)
	}
	return env, nil
}

// probe runs one probe once.
func (r *podRun) probe(c corev1.Container, p *corev1.Probe) bool {
	port := func(ip intstr.IntOrString) string {
		if ip.Type == intstr.Int {
			return strconv.Itoa(ip.IntValue())
		}
		for _, cp := range c.Ports {
			if cp.Name == ip.StrVal {
				return strconv.Itoa(int(cp.ContainerPort))
			}
		}
		return ip.StrVal
	}
	timeout := time.Second
	if p.TimeoutSeconds > 0 {
		timeout = time.Duration(p.TimeoutSeconds) * time.Second
	}
	switch {
	case p.HTTPGet != nil:
		scheme := "http"
		if p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		host := r.ip
		if p.HTTPGet.Host != "" {
			host = p.HTTPGet.Host
		}
		cl := &http.Client{Timeout: timeout, Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // kubelet probes skip verification too
			DisableKeepAlives: true,
		}}
		req, err := http.NewRequest(http.MethodGet, scheme+"://"+net.JoinHostPort(host, port(p.HTTPGet.Port))+p.HTTPGet.Path, nil)
		if err != nil {
			return false
		}
		for _, h := range p.HTTPGet.HTTPHeaders {
			req.Header.Set(h.Name, h.Value)
		}
		res, err := cl.Do(req)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode >= 200 && res.StatusCode < 400
	case p.TCPSocket != nil:
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(r.ip, port(p.TCPSocket.Port)), timeout)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	default:
		// exec and gRPC probes are not run by the harness: assumed passing.
		return true
	}
}

func (r *podRun) probeAll() {
	all := append(append([]corev1.Container{}, r.pod.Spec.InitContainers...), r.pod.Spec.Containers...)
	for _, c := range all {
		r.mu.Lock()
		started := r.started[c.Name]
		r.mu.Unlock()
		ok := started && (c.ReadinessProbe == nil || r.probe(c, c.ReadinessProbe))
		r.mu.Lock()
		r.ready[c.Name] = ok
		r.mu.Unlock()
	}
}

// pushStatus writes the pod's status when it changed.
func (r *podRun) pushStatus() {
	r.mu.Lock()
	st := r.statusLocked()
	r.mu.Unlock()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p, err := r.k.c.Kube.CoreV1().Pods(r.pod.Namespace).Get(context.Background(), r.pod.Name, metav1.GetOptions{})
		if err != nil || p.UID != r.uid || p.DeletionTimestamp != nil {
			return nil
		}
		if statusEqual(p.Status, st) {
			return nil
		}
		keepTransitions(&st, p.Status)
		st.QOSClass = p.Status.QOSClass // set by the API server, immutable
		p.Status = st
		_, err = r.k.c.Kube.CoreV1().Pods(p.Namespace).UpdateStatus(context.Background(), p, metav1.UpdateOptions{})
		return err
	})
	if err != nil && r.ctx.Err() == nil {
		r.logf("status: %v", err)
	}
}

func (r *podRun) statusLocked() corev1.PodStatus {
	now := metav1.Now()
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		return corev1.PodCondition{Type: t, Status: s, LastTransitionTime: now}
	}
	cstatus := func(c corev1.Container) corev1.ContainerStatus {
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: r.ready[c.Name],
			Started: ptr.To(r.started[c.Name]), RestartCount: r.restarts[c.Name]}
		if r.started[c.Name] {
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: now}
		} else {
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		}
		return cs
	}
	allReady := r.initDone && r.failed == ""
	var cs, ics []corev1.ContainerStatus
	for _, c := range r.pod.Spec.Containers {
		cs = append(cs, cstatus(c))
		allReady = allReady && r.ready[c.Name]
	}
	for _, c := range r.pod.Spec.InitContainers {
		s := cstatus(c)
		if c.RestartPolicy == nil && r.initDone {
			s.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed"}}
		}
		ics = append(ics, s)
		if c.RestartPolicy != nil {
			allReady = allReady && r.ready[c.Name]
		}
	}
	st := corev1.PodStatus{
		Phase:  corev1.PodPending,
		HostIP: NodeIP, HostIPs: []corev1.HostIP{{IP: NodeIP}},
		PodIP: r.ip, PodIPs: []corev1.PodIP{{IP: r.ip}},
		StartTime:             &now,
		ContainerStatuses:     cs,
		InitContainerStatuses: ics,
		Conditions: []corev1.PodCondition{
			cond(corev1.PodScheduled, true),
			cond(corev1.PodInitialized, r.initDone),
			cond(corev1.ContainersReady, allReady),
			cond(corev1.PodReady, allReady),
		},
	}
	if r.initDone {
		st.Phase = corev1.PodRunning
	}
	if r.failed != "" {
		st.Phase, st.Reason, st.Message = corev1.PodFailed, "HarnessError", r.failed
	}
	return st
}

func statusEqual(a, b corev1.PodStatus) bool {
	if a.Phase != b.Phase || a.PodIP != b.PodIP || len(a.Conditions) != len(b.Conditions) ||
		len(a.ContainerStatuses) != len(b.ContainerStatuses) || len(a.InitContainerStatuses) != len(b.InitContainerStatuses) {
		return false
	}
	for i := range a.Conditions {
		if a.Conditions[i].Type != b.Conditions[i].Type || a.Conditions[i].Status != b.Conditions[i].Status {
			return false
		}
	}
	same := func(x, y []corev1.ContainerStatus) bool {
		for i := range x {
			if x[i].Ready != y[i].Ready || ptr.Deref(x[i].Started, false) != ptr.Deref(y[i].Started, false) || x[i].RestartCount != y[i].RestartCount {
				return false
			}
		}
		return true
	}
	return same(a.ContainerStatuses, b.ContainerStatuses) && same(a.InitContainerStatuses, b.InitContainerStatuses)
}

// keepTransitions keeps the start time and condition transition times of
// conditions whose status did not change.
func keepTransitions(st *corev1.PodStatus, old corev1.PodStatus) {
	if old.StartTime != nil {
		st.StartTime = old.StartTime
	}
	for i := range st.Conditions {
		for _, o := range old.Conditions {
			if o.Type == st.Conditions[i].Type && o.Status == st.Conditions[i].Status {
				st.Conditions[i].LastTransitionTime = o.LastTransitionTime
			}
		}
	}
}

// tokenFor asks the API server for a ServiceAccount token bound to the pod,
// as the kubelet does for projected token volumes.
func (r *podRun) tokenFor(audience string, seconds *int64) (string, error) {
	sa := r.pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	var auds []string
	if audience != "" {
		auds = []string{audience}
	}
	tr, err := r.k.c.Kube.CoreV1().ServiceAccounts(r.pod.Namespace).CreateToken(context.Background(), sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         auds,
			ExpirationSeconds: seconds,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: r.pod.Name, UID: r.pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}
