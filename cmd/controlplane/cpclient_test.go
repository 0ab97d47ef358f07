package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/cpclient"
	"github.com/weftmesh/weft/proxy/identity"
)

// recordingProxy is the proxy side of cpclient: it keeps what it applies.
type recordingProxy struct {
	mu    sync.Mutex
	snaps []*meshconfig.Snapshot
}

func (p *recordingProxy) Apply(s *meshconfig.Snapshot) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.snaps = append(p.snaps, s)
	return nil
}

func (p *recordingProxy) last() (*meshconfig.Snapshot, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.snaps) == 0 {
		return nil, 0
	}
	return p.snaps[len(p.snaps)-1], len(p.snaps)
}

// startControlPlane runs the command with its gRPC port on loopback and
// returns the port.
func startControlPlane(t *testing.T, o options) (port int, stop func()) {
	t.Helper()
	addrc := make(chan net.Addr, 1)
	o.listening = func(a net.Addr) { addrc <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, env.Config, testr.New(t)) }()
	select {
	case a := <-addrc:
		port = a.(*net.TCPAddr).Port
	case err := <-done:
		cancel()
		t.Fatalf("run ended early: %v", err)
	}
	var once sync.Once
	return port, func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
}

// TestRealProxyClient: the proxy's own client (proxy/cpclient) gets a
// certificate with its ServiceAccount token, receives snapshots, follows a
// route change, and converges again after the control plane restarts.
func TestRealProxyClient(t *testing.T) {
	ctx := context.Background()
	kube := kubernetes.NewForConfigOrDie(env.Config)
	sec, root := issuerSecret(t, "weft-rc")
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-rc"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		sec,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}},
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", Labels: map[string]string{meshv1alpha1.LabelRevision: "rc", "app": "web"}},
			Spec:       corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
		},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}},
		&gatewayv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
					Group: ptr.To(gatewayv1.Group("")), Kind: ptr.To(gatewayv1.Kind("Service")), Name: "api"}}},
				Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
					Weight: ptr.To[int32](100), BackendObjectReference: gatewayv1.BackendObjectReference{Name: "api", Port: ptr.To(gatewayv1.PortNumber(80))}}}}}},
			},
		},
	} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := kube.CoreV1().ServiceAccounts("shop").CreateToken(ctx, "web", &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{"weft"}, ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tokenPath := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenPath, []byte(tr.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}

	o := options{
		meshName: "absent", namespace: "weft-rc", revision: "rc", version: "test", trustDomain: "cluster.local",
		issuerSecret: "weft-issuer", grpcAddr: "127.0.0.1:0", healthAddr: "0", metricsAddr: "0", webhookAddr: "0", replica: "weft-controlplane-rc-0",
		extraDNSNames: []string{"localhost"}, restartable: true,
	}
	port, stop := startControlPlane(t, o)
	defer func() { stop() }()

	proxy := &recordingProxy{}
	cl, err := cpclient.New(cpclient.Config{
		Addr: "localhost:" + strconv.Itoa(port), TrustDomain: "cluster.local", PodNamespace: "shop", ServiceAccount: "web",
		PodName: "web-1", TokenPath: tokenPath, TrustAnchors: pemCert(root), ProxyVersion: "v9.9.9",
		Identity: identity.NewMemorySource(nil), Proxy: proxy, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	cdone := make(chan error, 1)
	go func() { cdone <- cl.Run(cctx) }()
	defer func() { ccancel(); <-cdone }()

	weight := func(s *meshconfig.Snapshot) int {
		for _, svc := range s.Outbound.Services {
			if svc.Namespace == "shop" && svc.Name == "api" {
				for _, p := range svc.Ports {
					for _, r := range p.Routes {
						if r.Source == "HTTPRoute shop/api" {
							return int(r.Rules[0].Backends[0].Weight)
						}
					}
				}
			}
		}
		return -1
	}
	waitFor := func(what string, cond func(*meshconfig.Snapshot) bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			if s, _ := proxy.last(); s != nil && cond(s) {
				return
			}
			if time.Now().After(deadline) {
				s, n := proxy.last()
				t.Fatalf("timed out waiting for %s; %d snapshots applied, last %+v", what, n, s)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("the first snapshot", func(s *meshconfig.Snapshot) bool {
		return s.Identity == "spiffe://cluster.local/ns/shop/sa/web" && weight(s) == 100
	})

	// The status writers update the route's status too: retry on conflict.
	setWeight := func(w int32) {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var r gatewayv1.HTTPRoute
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "api"}, &r); err != nil {
				return err
			}
			r.Spec.Rules[0].BackendRefs[0].Weight = ptr.To(w)
			return env.Client.Update(ctx, &r)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setWeight(7)
	waitFor("the route change", func(s *meshconfig.Snapshot) bool { return weight(s) == 7 })
	_, before := proxy.last()

	// Restart on the same port: the client reconnects, says which version
	// it holds, and is not sent it again; a later change still reaches it.
	stop()
	o.grpcAddr = "127.0.0.1:" + strconv.Itoa(port)
	_, stop = startControlPlane(t, o)
	setWeight(3)
	waitFor("the change made after the restart", func(s *meshconfig.Snapshot) bool { return weight(s) == 3 })
	if _, after := proxy.last(); after != before+1 {
		t.Errorf("applied %d snapshots across the restart, want %d: the held version must not be resent", after-before, 1)
	}
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
