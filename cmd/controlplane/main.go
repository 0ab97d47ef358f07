// Command controlplane is one revision of the Weft control plane: it signs
// workload certificates (Identity.Certify), streams configuration snapshots
// to proxies (Config.Stream) and admits pods (the injector webhook). The
// operator starts it as weft-controlplane-<revision>; every replica serves
// proxies, only the leader writes status.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/go-logr/logr"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/compiler"
	"github.com/weftmesh/weft/controlplane/configserver"
	"github.com/weftmesh/weft/controlplane/identity"
	"github.com/weftmesh/weft/controlplane/status"
	"github.com/weftmesh/weft/internal/scheme"
	"github.com/weftmesh/weft/pkg/memrelease"
	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

// options are the command-line flags; the operator sets every one of them
// (controllers.RenderControlPlane).
type options struct {
	meshName       string
	namespace      string
	revision       string
	version        string
	trustDomain    string
	issuerSecret   string
	webhookCertDir string
	proxyImage     string
	grpcAddr       string
	webhookAddr    string
	healthAddr     string
	metricsAddr    string
	// pprofAddr is for profiling by hand; the operator leaves it off.
	pprofAddr   string
	leaderElect bool
	replica     string
	// gcPercent is GOGC, applied when given or when the environment has
	// no GOGC (gcPercentGiven).
	gcPercent      int
	gcPercentGiven bool

	// listening, if set, is told the gRPC address once bound (tests).
	listening func(net.Addr)
	// restartable lets run be called again in the same process (tests).
	restartable bool
	// extraDNSNames are added to the serving certificate (tests dial
	// "localhost", having no cluster DNS).
	extraDNSNames []string
}

func parseFlags(fs *flag.FlagSet, args []string) (options, error) {
	var o options
	fs.StringVar(&o.meshName, "mesh-name", "", "Name of the MeshControlPlane this control plane serves.")
	fs.StringVar(&o.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "The control plane's namespace (issuer Secret, status ConfigMaps, leader Lease).")
	fs.StringVar(&o.revision, "revision", "", "Control-plane revision this process belongs to.")
	fs.StringVar(&o.version, "version", "", "Weft version of this control plane.")
	fs.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of workload identities.")
	fs.StringVar(&o.issuerSecret, "issuer-secret", "weft-issuer", "Secret holding the issuer certificate, key and trust bundle.")
	fs.StringVar(&o.webhookCertDir, "webhook-cert-dir", "/var/run/weft/webhook", "Directory with the injector webhook's tls.crt and tls.key.")
	fs.StringVar(&o.proxyImage, "proxy-image", "", "Image of the weft-proxy sidecar the injector adds.")
	fs.StringVar(&o.grpcAddr, "grpc-addr", ":8090", "Address of the gRPC port (Identity and Config services, TLS).")
	fs.StringVar(&o.webhookAddr, "webhook-addr", ":9443", "Address of the injector webhook (HTTPS); \"0\" disables it.")
	fs.StringVar(&o.healthAddr, "health-addr", ":9091", "Address of /healthz and /readyz; \"0\" disables them.")
	fs.StringVar(&o.metricsAddr, "metrics-addr", ":9090", "Address of the Prometheus /metrics endpoint; \"0\" disables it.")
	fs.StringVar(&o.pprofAddr, "pprof-addr", "0", "Address of the Go profiler (/debug/pprof/); \"0\" disables it.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "Elect a leader among replicas for status writing.")
	fs.IntVar(&o.gcPercent, "gc-percent", defaultGCPercent, "GOGC of the control plane; when the flag is not given, GOGC from the environment wins.")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	fs.Visit(func(f *flag.Flag) { o.gcPercentGiven = o.gcPercentGiven || f.Name == "gc-percent" })
	var missing []string
	for name, v := range map[string]string{"--mesh-name": o.meshName, "--namespace": o.namespace, "--revision": o.revision} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return o, fmt.Errorf("required flags are not set: %v", missing)
	}
	if _, err := spiffeid.TrustDomainFromString(o.trustDomain); err != nil {
		return o, fmt.Errorf("--trust-domain %q: %w", o.trustDomain, err)
	}
	o.replica = os.Getenv("POD_NAME")
	if o.replica == "" {
		o.replica, _ = os.Hostname()
	}
	return o, nil
}

func main() {
	zopts := zap.Options{}
	fs := flag.NewFlagSet("weft-controlplane", flag.ExitOnError)
	zopts.BindFlags(fs)
	o, err := parseFlags(fs, os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "weft-controlplane:", err)
		os.Exit(2)
	}
	if o.pprofAddr == "" || o.pprofAddr == "0" {
		// Linking the profiler turns allocation sampling on; its tables
		// grow with every sampled call site and stay resident.
		runtime.MemProfileRate = 0
	}
	logger := zap.New(zap.UseFlagOptions(&zopts))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)
	setGCPercent(o, os.Getenv)
	if limit, err := setMemoryLimit(); err != nil {
		logger.Error(err, "Reading the container's memory limit failed; the Go runtime has no soft limit")
	} else if limit > 0 {
		logger.Info("Set the Go runtime's soft memory limit from the container's", "bytes", limit)
	}
	useSmallBufferPool()
	cfg, err := ctrl.GetConfig()
	if err != nil {
		logger.Error(err, "Unable to find a kubeconfig")
		os.Exit(1)
	}
	if err := run(ctrl.SetupSignalHandler(), o, cfg, logger); err != nil {
		logger.Error(err, "The control plane stopped with an error")
		os.Exit(1)
	}
}

// run starts everything and blocks until ctx ends.
func run(ctx context.Context, o options, cfg *rest.Config, log logr.Logger) error {
	td := spiffeid.RequireTrustDomainFromString(o.trustDomain)
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	lease := 30 * time.Second
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme.New(),
		Logger: log,
		Cache: cache.Options{
			// Managed fields are a large share of every cached Pod and
			// EndpointSlice, and the compiler never reads them.
			DefaultTransform: cache.TransformStripManagedFields(),
			// The control plane reads ConfigMaps (trust bundle, proxy
			// status) only in its own namespace, and its RBAC says so.
			ByObject: map[client.Object]cache.ByObject{
				&corev1.ConfigMap{}: {Namespaces: map[string]cache.Config{o.namespace: {}}},
				// Of a Pod only metadata, ServiceAccount and container ports
				// are read.
				&corev1.Pod{}: {Transform: configserver.TransformPod},
				// Of an endpoint, addresses, readiness and target Pod.
				&discoveryv1.EndpointSlice{}: {Transform: configserver.TransformEndpointSlice},
			},
		},
		Metrics:                       metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:        o.healthAddr,
		PprofBindAddress:              o.pprofAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              "weft-controlplane-" + o.revision,
		LeaderElectionNamespace:       o.namespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &lease,
		// A test restarts the control plane within one process, which
		// registers the status controllers' names a second time.
		Controller: ctrlconfig.Controller{SkipNameValidation: &o.restartable},
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}

	// Identity: the issuer Secret, reloaded on change, and a serving
	// certificate for weft-controlplane-<rev>.<ns>.svc reissued with it.
	svcName := "weft-controlplane-" + o.revision
	cpID, err := identity.WorkloadID(td, o.namespace, "weft-controlplane")
	if err != nil {
		return err
	}
	serving := &servingCerts{
		id:  cpID,
		log: log.WithName("serving"),
		dnsNames: []string{
			svcName + "." + o.namespace + ".svc",
			svcName + "." + o.namespace + ".svc.cluster.local",
			svcName + "." + o.namespace,
			svcName,
		},
	}
	serving.dnsNames = append(serving.dnsNames, o.extraDNSNames...)
	store := &identity.Store{Client: kube, Namespace: o.namespace, Name: o.issuerSecret, Log: log.WithName("issuer"), OnChange: serving.issue}
	certify := &identity.Service{TrustDomain: td, Auth: identity.TokenReviewer{Client: kube}, Issuers: store}

	hub := &configserver.Hub{
		Cache:     mgr.GetCache(),
		APIReader: mgr.GetAPIReader(),
		Mesh:      compiler.Mesh{TrustDomain: o.trustDomain},
		Log:       log.WithName("config"),
		Metrics:   configserver.NewMetrics(ctrlmetrics.Registry),
		TrustBundle: func() []byte {
			if iss := store.Current(); iss != nil {
				return iss.BundlePEM()
			}
			return nil
		},
	}
	// A new issuer may bring new roots: push them to the proxies at once
	// (the hub also checks on a timer).
	store.OnChange = func(i *identity.Issuer) {
		serving.issue(i)
		hub.BundleChanged()
	}
	meshWatch := &meshWatcher{cache: mgr.GetCache(), name: o.meshName, hub: hub, certify: certify, trustDomain: o.trustDomain, log: log.WithName("mesh")}

	grpcSrv := grpc.NewServer(append(configserver.ServerOptions(),
		grpc.Creds(credentials.NewTLS(configserver.ServerTLS(serving.Cert, serving.Roots))),
		// Proxies hold one stream for days: keepalives find the dead ones
		// (a node gone) so they stop counting as connected.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// A thousand mostly idle streams: do not keep a 32 KiB write buffer
		// per connection between snapshots, and no read buffer at all: the
		// TLS connection underneath already buffers what it decrypted, so
		// gRPC's own (8 KiB per connection) only copied it once more.
		grpc.SharedWriteBuffer(true),
		grpc.ReadBufferSize(0),
	)...)
	meshapiv1.RegisterIdentityServer(grpcSrv, certify)
	meshapiv1.RegisterConfigServer(grpcSrv, &configserver.Server{Hub: hub, TrustDomain: td})

	statusWriter := &configserver.StatusWriter{
		Client: mgr.GetClient(), Hub: hub, Namespace: o.namespace, Revision: o.revision, Replica: o.replica,
		Log: log.WithName("proxy-status"),
	}
	// "Applied by N of M" counts every replica's and revision's proxies.
	counter := &configserver.MeshCounter{
		Hub: hub, Reader: mgr.GetCache(), Namespace: o.namespace, Revision: o.revision, Replica: o.replica,
	}

	for _, r := range []manager.Runnable{
		everyReplica(store.Run),
		// A burst (proxies connecting, a rollout's changes) grows the heap
		// to twice its live size and maps code from all over the binary;
		// give both back once the process is quiet again.
		everyReplica((&memrelease.Releaser{OnRelease: func(collected bool, unmapped int, err error) {
			if err != nil {
				log.Error(err, "Unmapping the executable's pages failed")
				return
			}
			log.V(1).Info("Released memory after a burst", "collected", collected, "unmappedBytes", unmapped)
		}}).Run),
		everyReplica(func(ctx context.Context) error { return serving.renew(ctx, store) }),
		everyReplica(func(ctx context.Context) error {
			// The first compilation uses the MeshControlPlane's settings, so
			// proxies are not sent a snapshot that is replaced at once.
			if err := meshWatch.Start(ctx); err != nil {
				return err
			}
			return hub.Start(ctx)
		}),
		everyReplica(statusWriter.Start),
		everyReplica(func(ctx context.Context) error {
			inf, err := mgr.GetCache().GetInformer(ctx, &corev1.ConfigMap{})
			if err != nil {
				return err
			}
			return counter.Run(ctx, inf)
		}),
		everyReplica(func(ctx context.Context) error { return serveGRPC(ctx, grpcSrv, o, log) }),
	} {
		if err := mgr.Add(r); err != nil {
			return err
		}
	}

	// Status of HTTPRoutes, TrafficSplits and AuthorizationPolicies, with
	// how many proxies applied each: written by the leader only.
	if err := status.SetupWithManager(mgr, counter); err != nil {
		return fmt.Errorf("setting up the status writers: %w", err)
	}
	// The injector webhook: every replica admits pods.
	inj, err := addInjector(mgr, o, log)
	if err != nil {
		return fmt.Errorf("setting up the injector: %w", err)
	}
	meshWatch.injector = inj

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("config", func(*http.Request) error {
		select {
		case <-hub.Ready():
		default:
			return errors.New("the configuration is not compiled yet")
		}
		if store.Current() == nil {
			if err := store.Err(); err != nil {
				return err
			}
			return errors.New("the issuer is not loaded yet")
		}
		return nil
	}); err != nil {
		return err
	}

	log.Info("Starting the Weft control plane", "version", o.version, "revision", o.revision, "mesh", o.meshName, "replica", o.replica)
	return mgr.Start(ctx)
}

// everyReplica is a runnable that runs on every replica, leader or not.
type everyReplica func(context.Context) error

func (f everyReplica) Start(ctx context.Context) error { return f(ctx) }
func (f everyReplica) NeedLeaderElection() bool        { return false }

func serveGRPC(ctx context.Context, srv *grpc.Server, o options, log logr.Logger) error {
	l, err := net.Listen("tcp", o.grpcAddr)
	if err != nil {
		return fmt.Errorf("listening on --grpc-addr %s: %w", o.grpcAddr, err)
	}
	if o.listening != nil {
		o.listening(l.Addr())
	}
	log.Info("Serving gRPC", "addr", l.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Streams never end on their own; give unary calls a moment, then cut
	// the streams (proxies reconnect to another replica).
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		srv.Stop()
	}
	return nil
}

// meshWatcher feeds the MeshControlPlane's mesh-wide settings (mTLS mode,
// default authorization, opaque ports) to the hub.
type meshWatcher struct {
	injector    *injector
	cache       cache.Cache
	name        string
	hub         *configserver.Hub
	certify     *identity.Service
	trustDomain string
	log         logr.Logger
}

// Start registers the watch and applies the settings once the informer has
// synced; later changes are applied by the event handler.
func (m *meshWatcher) Start(ctx context.Context) error {
	inf, err := m.cache.GetInformer(ctx, &meshv1alpha1.MeshControlPlane{})
	if err != nil {
		return fmt.Errorf("watching MeshControlPlanes: %w", err)
	}
	update := func(any) { m.sync(ctx) }
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: update, UpdateFunc: func(_, o any) { update(o) }, DeleteFunc: update,
	}); err != nil {
		return err
	}
	if !toolscache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil
	}
	m.sync(ctx)
	return nil
}

func (m *meshWatcher) sync(ctx context.Context) {
	var mcp meshv1alpha1.MeshControlPlane
	if err := m.cache.Get(ctx, client.ObjectKey{Name: m.name}, &mcp); err != nil {
		if client.IgnoreNotFound(err) != nil {
			m.log.Error(err, "Reading the MeshControlPlane failed", "name", m.name)
		}
		return
	}
	m.hub.SetMesh(meshSettings(&mcp, m.trustDomain))
	if m.injector != nil {
		m.injector.update(&mcp)
	}
	if m.certify != nil {
		// Leaves issued from now on; running proxies get theirs at renewal.
		m.certify.SetLeafTTL(mcp.Spec.Identity.LeafLifetime.Duration)
	}
}

// meshSettings maps the spec onto the compiler's Mesh. The trust domain
// comes from the flag: it is what the issued certificates carry.
func meshSettings(mcp *meshv1alpha1.MeshControlPlane, trustDomain string) compiler.Mesh {
	m := compiler.Mesh{TrustDomain: trustDomain}
	switch mcp.Spec.MTLS.Mode {
	case meshv1alpha1.MTLSPermissive:
		m.MTLSMode = meshconfig.MTLSPermissive
	case meshv1alpha1.MTLSStrict:
		m.MTLSMode = meshconfig.MTLSStrict
	}
	switch mcp.Spec.Authorization.DefaultPolicy {
	case meshv1alpha1.DefaultPolicyAllow:
		m.DefaultPolicy = meshconfig.DefaultAllow
	case meshv1alpha1.DefaultPolicyDeny:
		m.DefaultPolicy = meshconfig.DefaultDeny
	case meshv1alpha1.DefaultPolicyAuthenticated:
		m.DefaultPolicy = meshconfig.DefaultAuthenticated
	}
	for _, p := range mcp.Spec.Proxy.OpaquePorts {
		if p > 0 && p < 65536 {
			m.OpaquePorts = append(m.OpaquePorts, uint16(p))
		}
	}
	return m
}
