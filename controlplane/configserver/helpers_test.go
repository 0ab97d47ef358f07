package configserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/compiler"
	"github.com/weftmesh/weft/controlplane/configserver/fakeproxy"
	"github.com/weftmesh/weft/controlplane/identity"
	"github.com/weftmesh/weft/internal/scheme"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/testpki"
	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Options{GatewayAPI: true}, func(e *testenv.Env) { env = e }))
}

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

// The mesh's CA as the operator would mint it: root → issuer.
var (
	caOnce sync.Once
	caIss  *identity.Issuer
)

func issuer(t *testing.T) *identity.Issuer {
	t.Helper()
	caOnce.Do(func() {
		ch, err := testpki.NewChain("test root", "test issuer")
		if err != nil {
			panic(err)
		}
		caIss, err = identity.ParseIssuer(ch.IssuerPEM, ch.IssuerKeyPEM, ch.BundlePEM)
		if err != nil {
			panic(err)
		}
	})
	return caIss
}

func roots(t *testing.T) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(issuer(t).BundlePEM())
	return pool
}

// workloadTLS is a proxy's client TLS config with a leaf for ns/sa (none when
// sa is empty).
func workloadTLS(t *testing.T, ns, sa string) *tls.Config {
	t.Helper()
	cfg := &tls.Config{RootCAs: roots(t), ServerName: "weft-controlplane-1.weft-system.svc", MinVersion: tls.VersionTLS13}
	if sa == "" {
		return cfg
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, err := identity.WorkloadID(td, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	chain, _, err := issuer(t).Sign(key.Public(), identity.LeafTemplate{ID: id, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Certificates = []tls.Certificate{{Certificate: chain, PrivateKey: key}}
	return cfg
}

// controlPlane is one running config server: cache, hub and gRPC server on
// loopback.
type controlPlane struct {
	Addr    string
	Hub     *Hub
	cancel  context.CancelFunc
	srv     *grpc.Server
	done    chan struct{}
	stopped bool
}

// startControlPlane serves on addr ("127.0.0.1:0" for any port).
func startControlPlane(t *testing.T, addr string) *controlPlane {
	t.Helper()
	return startControlPlaneWith(t, addr, nil)
}

// startControlPlaneWith lets configure change the hub before it starts.
func startControlPlaneWith(t *testing.T, addr string, configure func(*Hub)) *controlPlane {
	t.Helper()
	c, err := cache.New(env.Config, cache.Options{Scheme: scheme.New(), DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{&corev1.Pod{}: {Transform: TransformPod}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hub := &Hub{
		Cache: c, APIReader: env.Client, Log: testr.New(t).WithName("hub"),
		Mesh:        compiler.Mesh{TrustDomain: td.Name()},
		Metrics:     NewMetrics(prometheus.NewRegistry()),
		TrustBundle: func() []byte { return issuer(t).BundlePEM() },
	}
	if configure != nil {
		configure(hub)
	}
	serving, err := issuer(t).ServingCertificate(spiffeid.RequireFromPath(td, "/ns/weft-system/sa/weft-controlplane"),
		[]string{"weft-controlplane-1.weft-system.svc"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// WaitForHandlers: Stop returns after the streams' handlers, whose
	// last log lines would otherwise reach t after the test ended.
	srv := grpc.NewServer(append(ServerOptions(), grpc.WaitForHandlers(true), grpc.Creds(credentials.NewTLS(ServerTLS(func() *tls.Certificate { return serving }, func() *x509.CertPool { return roots(t) }))))...)
	meshapiv1.RegisterConfigServer(srv, &Server{Hub: hub, TrustDomain: td})
	var l net.Listener
	// A restarted control plane rebinds the same port; the old socket may
	// take a moment to be released.
	for i := 0; ; i++ {
		if l, err = net.Listen("tcp", addr); err == nil || i == 100 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	cp := &controlPlane{Addr: l.Addr().String(), Hub: hub, cancel: cancel, srv: srv, done: make(chan struct{})}
	go func() { _ = c.Start(ctx) }()
	go func() {
		defer close(cp.done)
		if err := hub.Start(ctx); err != nil {
			t.Errorf("hub: %v", err)
		}
	}()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(cp.Stop)
	return cp
}

func (cp *controlPlane) Stop() {
	if cp.stopped {
		return
	}
	cp.stopped = true
	cp.srv.Stop()
	cp.cancel()
	<-cp.done
}

func (cp *controlPlane) proxy(t *testing.T, ns, pod, sa string) *fakeproxy.Client {
	t.Helper()
	c := &fakeproxy.Client{Addr: cp.Addr, TLS: workloadTLS(t, ns, sa), Namespace: ns, Pod: pod, ProxyVersion: "v0.1.0"}
	t.Cleanup(c.Close)
	return c
}

// run runs a fake proxy until the test ends.
func run(t *testing.T, c *fakeproxy.Client) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := env.Client.Create(context.Background(), o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func serviceAccount(ns, name string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

func pod(ns, name, sa string, meshed bool, labels map[string]string) *corev1.Pod {
	l := map[string]string{}
	for k, v := range labels {
		l[k] = v
	}
	if meshed {
		l[meshv1alpha1.LabelRevision] = "1"
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Containers: []corev1.Container{{Name: "app", Image: "app:1",
				Ports: []corev1.ContainerPort{{ContainerPort: 8080, Name: "http"}}}},
		},
	}
}

func service(ns, name string, selector map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{Name: "http", Port: 80,
			AppProtocol: ptr.To("http")}}},
	}
}

func endpointSlice(ns, svc string, ips ...string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: svc + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
	}
	for _, ip := range ips {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	return es
}

// route is a GAMMA HTTPRoute in ns for Service svcNS/svc, splitting between
// two backends of the Service's namespace.
func route(ns, name, svcNS, svc string, w1, w2 int32) *gatewayv1.HTTPRoute {
	ref := func(n string, w int32) gatewayv1.HTTPBackendRef {
		return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{Weight: ptr.To(w), BackendObjectReference: gatewayv1.BackendObjectReference{
			Name: gatewayv1.ObjectName(n), Namespace: ptr.To(gatewayv1.Namespace(svcNS)), Port: ptr.To(gatewayv1.PortNumber(80))}}}
	}
	return &gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
				Group: ptr.To(gatewayv1.Group("")), Kind: ptr.To(gatewayv1.Kind("Service")),
				Name: gatewayv1.ObjectName(svc), Namespace: ptr.To(gatewayv1.Namespace(svcNS)), Port: ptr.To(gatewayv1.PortNumber(80)),
			}}},
			Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{ref(svc+"-v1", w1), ref(svc+"-v2", w2)}}},
		},
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func state(h *Hub, pod string) (ProxyState, bool) {
	for _, p := range h.Proxies() {
		if p.Pod == pod {
			return p, true
		}
	}
	return ProxyState{}, false
}

// acked waits until the proxy is connected and has acked what it was sent.
func acked(t *testing.T, h *Hub, pod string) ProxyState {
	t.Helper()
	var s ProxyState
	waitUntil(t, pod+" acked its snapshot", func() bool {
		var ok bool
		s, ok = state(h, pod)
		return ok && s.Sent != "" && s.Acked == s.Sent && s.Error == ""
	})
	return s
}
