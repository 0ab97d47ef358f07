package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	admregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controllers"
	"github.com/weftmesh/weft/controlplane/inject"
	"github.com/weftmesh/weft/internal/testenv"
)

const meshNS = "weft-system"

// suite is the API server and the injector it calls, shared by the tests
// of this package.
var suite struct {
	env     *testenv.Env
	anchors string
	// caPool trusts the webhook's serving certificate.
	caPool  *x509.CertPool
	hookURL string
	cfg     inject.Config
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

// run is testenv.Main with one more step: the injector's informers are
// stopped before the API server, which otherwise waits for their watches
// until it is killed.
func run(m *testing.M) int {
	anchors, err := os.ReadFile(filepath.Join("..", "testdata", "trust-anchors.pem"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	suite.anchors = string(anchors)
	if slices.ContainsFunc(os.Args, func(a string) bool { return strings.HasPrefix(a, "-test.fuzzworker") }) {
		// A fuzz worker runs only the fuzz target, which needs no API
		// server; one per worker would be wasted (and left behind when the
		// fuzzer kills its workers).
		return m.Run()
	}
	if _, err := testenv.AssetsDir(); err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			return 1
		}
		fmt.Fprintln(os.Stderr, "SKIP: these tests need a local API server:", err)
		return 0
	}
	hook, err := registeredWebhook()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	env, err := testenv.Start(testenv.Options{Webhooks: &envtest.WebhookInstallOptions{
		MutatingWebhooks: []*admregv1.MutatingWebhookConfiguration{hook},
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the API server:", err)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := startInjector(ctx, env); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: starting the injector:", err)
		return 1
	}
	return m.Run()
}

// registeredWebhook is the webhook configuration the operator applies for a
// mesh with default injection settings, so these tests exercise the real
// namespace and object selectors.
func registeredWebhook() (*admregv1.MutatingWebhookConfiguration, error) {
	mesh := &meshv1alpha1.MeshControlPlane{}
	mesh.Spec.Namespace = meshNS
	mesh.Spec.Injection.FailurePolicy = meshv1alpha1.FailurePolicyIgnore
	hook := controllers.RenderWebhook(mesh, "stable", nil)
	hook.OwnerReferences = nil // the mesh object does not exist here
	for i := range hook.Webhooks {
		// envtest joins host and path with a slash of its own.
		svc := hook.Webhooks[i].ClientConfig.Service
		p := svc.Path
		if p == nil || *p != Path {
			return nil, fmt.Errorf("webhook %s: service path %v, want %s", hook.Webhooks[i].Name, p, Path)
		}
		trimmed := Path[1:]
		svc.Path = &trimmed
	}
	return hook, nil
}

func startInjector(ctx context.Context, env *testenv.Env) error {
	suite.env = env
	c := env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: meshNS}}); err != nil {
		return err
	}
	if err := c.Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: meshNS, Name: TrustBundleConfigMap},
		Data:       map[string]string{TrustBundleKey: suite.anchors},
	}); err != nil {
		return err
	}

	// The control plane reads namespaces and the bundle through its cache.
	informers, err := cache.New(env.Config, cache.Options{Scheme: c.Scheme()})
	if err != nil {
		return err
	}
	go informers.Start(ctx)
	if !informers.WaitForCacheSync(ctx) {
		return fmt.Errorf("cache did not sync")
	}

	opts := env.Environment().WebhookInstallOptions
	suite.caPool = x509.NewCertPool()
	suite.caPool.AppendCertsFromPEM(opts.LocalServingCAData)
	addr := net.JoinHostPort(opts.LocalServingHost, fmt.Sprint(opts.LocalServingPort))
	suite.hookURL = "https://" + addr + Path
	suite.cfg = inject.DefaultConfig()
	suite.cfg.MeshNamespace = meshNS

	log := logr.Discard()
	if os.Getenv("WEFT_TEST_LOG") != "" {
		log = funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{Verbosity: 1})
	}
	srv := &Server{
		Addr:    addr,
		CertDir: opts.LocalServingCertDir,
		Handler: &Handler{
			Config:       suite.cfg,
			TrustAnchors: ConfigMapTrustAnchors(informers, meshNS),
			Namespaces:   informers,
			APIReader:    c,
			Log:          log,
		},
		Log: log,
	}
	go func() {
		if err := srv.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "webhook server:", err)
		}
	}()

	// The API server loads webhook registrations asynchronously; with
	// failurePolicy Ignore a pod created before that is silently left
	// alone. Wait until a dry-run pod comes back injected.
	probeNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "webhook-ready", Labels: map[string]string{inject.LabelInject: inject.ValueEnabled}}}
	if err := c.Create(ctx, probeNS); err != nil {
		return err
	}
	var last error
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pod := testPod(probeNS.Name, "ready")
		if last = c.Create(ctx, pod, client.DryRunAll); last != nil {
			return false, nil
		}
		last = fmt.Errorf("dry-run pod not injected: annotations %v", pod.Annotations)
		return pod.Annotations[inject.AnnotationInjected] != "", nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the API server to call the injector: %w (last: %v)", err, last)
	}
	return nil
}

func testPod(ns, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			// Set by the ServiceAccount admission plugin in a cluster;
			// envtest runs without it. The projected token needs it.
			ServiceAccountName: "default",
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "example.com/web:1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			}}},
	}
}

// httpsClient trusts the webhook's serving certificate.
func httpsClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: suite.caPool, MinVersion: tls.VersionTLS12}}}
}
