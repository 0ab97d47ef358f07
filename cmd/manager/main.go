// Command manager is the Weft operator: it reconciles MeshControlPlane objects
// into a running control plane, its certificates and the rollout of proxies.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/weftmesh/weft/controllers"
	"github.com/weftmesh/weft/internal/scheme"
	"github.com/weftmesh/weft/internal/version"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		metricsAddr      = flag.String("metrics-bind-address", ":8443", "Address of the metrics endpoint (HTTPS, authenticated and authorized through the API server); \"0\" disables it.")
		metricsInsecure  = flag.Bool("metrics-insecure", false, "Serve metrics over plain HTTP without authentication (for local development only).")
		probeAddr        = flag.String("health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
		leaderElect      = flag.Bool("leader-elect", true, "Elect a leader so that only one replica reconciles at a time.")
		leaderElectionNS = flag.String("leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's namespace).")
		showVersion      = flag.Bool("version", false, "Print the version and exit.")
	)
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *showVersion {
		fmt.Println(version.String())
		return 0
	}

	logger := zap.New(zap.UseFlagOptions(&opts))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)
	log := ctrl.Log.WithName("setup")

	metricsOpts := metricsserver.Options{
		BindAddress:   *metricsAddr,
		SecureServing: !*metricsInsecure,
		// HTTP/2 is off on the metrics endpoint: it is not needed there and
		// has had rapid-reset vulnerabilities.
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
	}
	if !*metricsInsecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	restConfig, err := ctrl.GetConfig()
	if err != nil {
		log.Error(err, "Unable to find a kubeconfig")
		return 1
	}
	leaseDuration := 30 * time.Second
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                        scheme.New(),
		Cache:                         controllers.CacheOptions(),
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        *probeAddr,
		LeaderElection:                *leaderElect,
		LeaderElectionID:              "operator.mesh.weft.dev",
		LeaderElectionNamespace:       *leaderElectionNS,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &leaseDuration,
	})
	if err != nil {
		log.Error(err, "Unable to create the manager")
		return 1
	}

	if err := (&controllers.MeshControlPlaneReconciler{}).SetupWithManager(mgr); err != nil {
		log.Error(err, "Unable to set up the MeshControlPlane controller")
		return 1
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "Unable to set up the health check")
		return 1
	}
	// Ready once the informer caches have synced, so a restarted operator
	// does not report ready before it can see the cluster.
	if err := mgr.AddReadyzCheck("readyz", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return errors.New("informer caches have not synced")
		}
		return nil
	}); err != nil {
		log.Error(err, "Unable to set up the readiness check")
		return 1
	}

	log.Info("Starting the Weft operator", "version", version.Version)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "The manager stopped with an error")
		return 1
	}
	return 0
}
