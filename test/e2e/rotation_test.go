package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/test/e2e/harness"
)

// load is a steady stream of requests from one pod, each on a new
// connection, about twenty a second, until stopped.
type load struct {
	stopFile string
	done     chan struct{}
	mu       sync.Mutex
	out      string
	err      error
}

func (m *mesh) startLoad(t *testing.T, ns, pod, url string) *load {
	t.Helper()
	l := &load{stopFile: filepath.Join(t.TempDir(), "stop"), done: make(chan struct{})}
	script := fmt.Sprintf(`while [ ! -e %q ]; do curl -s -o /dev/null --max-time 5 -w '%%{http_code}\n' %q; sleep 0.05; done`, l.stopFile, url)
	go func() {
		defer close(l.done)
		out, err := m.Exec(ns, pod, "sh", "-c", script)
		l.mu.Lock()
		l.out, l.err = out, err
		l.mu.Unlock()
	}()
	t.Cleanup(func() { l.stop() })
	return l
}

// stop ends the load and returns the number of requests and the failures
// by status code ("000" when no response came).
func (l *load) stop() (int, map[string]int, error) {
	if err := os.WriteFile(l.stopFile, nil, 0o644); err != nil {
		return 0, nil, err
	}
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	failed := map[string]int{}
	n := 0
	for _, code := range strings.Fields(l.out) {
		n++
		if code != "200" {
			failed[code]++
		}
	}
	return n, failed, l.err
}

// proxyIdentity is what a proxy's admin /identity says.
type proxyIdentity struct {
	ID     string   `json:"id"`
	Serial string   `json:"serial"`
	Roots  []string `json:"roots"`
}

func identityOf(podIP string) (proxyIdentity, error) {
	var id proxyIdentity
	cl := &http.Client{Timeout: 5 * time.Second}
	res, err := cl.Get("http://" + podIP + ":4191/identity")
	if err != nil {
		return id, err
	}
	defer res.Body.Close()
	return id, json.NewDecoder(res.Body).Decode(&id)
}

// configOf is a proxy's admin /config: the snapshot it applies.
func configOf(podIP string) (string, error) {
	cl := &http.Client{Timeout: 5 * time.Second}
	res, err := cl.Get("http://" + podIP + ":4191/config")
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

func parseCerts(b []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// testTrustAnchorRotation replaces the mesh's trust anchor (and with it the
// issuer) under a steady load and expects no failed request: the operator
// keeps the old root in the trust bundle, the control plane reloads the new
// issuer without a restart, running proxies learn the new root from their
// config stream, a pod started afterwards gets a leaf from the new issuer,
// and old and new leaves keep talking to each other.
func testTrustAnchorRotation(t *testing.T, m *mesh) {
	ctx := context.Background()
	const ns = "split"
	url := "http://web." + ns + ".svc.cluster.local/"
	cl := m.Pods(t, ns, map[string]string{"app": "client"})[0]
	before, err := identityOf(cl.Status.PodIP)
	if err != nil {
		t.Fatal(err)
	}
	var anchor corev1.Secret
	if err := m.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-trust-anchor"}, &anchor); err != nil {
		t.Fatal(err)
	}
	oldAnchor := parseCerts(anchor.Data["tls.crt"])

	l := m.startLoad(t, ns, cl.Name, url)
	time.Sleep(2 * time.Second)

	// The operator replaces a missing anchor, keeping the old root in the
	// bundle, and re-issues the issuer under the new one.
	if err := m.Client.Delete(ctx, &anchor); err != nil {
		t.Fatal(err)
	}
	var newAnchor *x509.Certificate
	harness.Eventually(t, 2*time.Minute, "a new anchor, both roots in the bundle, the issuer under the new anchor", func() (bool, error) {
		var a, iss corev1.Secret
		var bundle corev1.ConfigMap
		if err := m.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-trust-anchor"}, &a); err != nil {
			return false, err
		}
		if err := m.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-issuer"}, &iss); err != nil {
			return false, err
		}
		if err := m.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-trust-bundle"}, &bundle); err != nil {
			return false, err
		}
		na, ic, roots := parseCerts(a.Data["tls.crt"]), parseCerts(iss.Data["tls.crt"]), parseCerts([]byte(bundle.Data["ca.crt"]))
		if len(na) != 1 || len(ic) == 0 || na[0].Equal(oldAnchor[0]) {
			return false, fmt.Errorf("anchor not replaced yet")
		}
		if err := ic[0].CheckSignatureFrom(na[0]); err != nil {
			return false, fmt.Errorf("issuer not under the new anchor yet: %v", err)
		}
		newAnchor = na[0]
		return len(roots) == 2, fmt.Errorf("bundle holds %d roots", len(roots))
	})

	// Running proxies learn the new root without a restart.
	harness.Eventually(t, 2*time.Minute, "the client's proxy trusts both roots", func() (bool, error) {
		id, err := identityOf(cl.Status.PodIP)
		if err != nil {
			return false, err
		}
		return len(id.Roots) == 2 && id.Serial == before.Serial, fmt.Errorf("roots %v serial %s (was %s)", id.Roots, id.Serial, before.Serial)
	})

	// A pod started now is certified by the new issuer: web-v2, which gets
	// no traffic yet (the split sends everything to web-v1).
	old := m.Pods(t, ns, map[string]string{"app": "web-v2"})[0]
	if err := m.Client.Delete(ctx, &old); err != nil {
		t.Fatal(err)
	}
	var fresh corev1.Pod
	harness.Eventually(t, 2*time.Minute, "web-v2 replaced", func() (bool, error) {
		for _, p := range m.Pods(t, ns, map[string]string{"app": "web-v2"}) {
			if p.Name != old.Name && p.DeletionTimestamp == nil {
				fresh = p
				return true, nil
			}
		}
		return false, fmt.Errorf("still %s", old.Name)
	})
	m.WaitReady(t, ns, "web-v2", 2*time.Minute)
	fresh = m.Pods(t, ns, map[string]string{"app": "web-v2"})[0]
	harness.Eventually(t, time.Minute, "the new pod's proxy has a leaf", func() (bool, error) {
		id, err := identityOf(fresh.Status.PodIP)
		if err != nil {
			return false, err
		}
		return id.Serial != "" && len(id.Roots) == 2, fmt.Errorf("%+v", id)
	})

	// The client's proxy must know the new pod before traffic moves to it:
	// a split to a backend whose endpoints the proxy has not heard of yet
	// answers 503 (no endpoint), as Envoy and Linkerd do. The EndpointSlice
	// and the split reach the proxy by separate compilations.
	harness.Eventually(t, time.Minute, "the client's proxy knows the new web-v2 endpoint", func() (bool, error) {
		cfg, err := configOf(cl.Status.PodIP)
		if err != nil {
			return false, err
		}
		return strings.Contains(cfg, `"`+fresh.Status.PodIP+`:`), fmt.Errorf("no endpoint %s in the client's config", fresh.Status.PodIP)
	})

	// Traffic moves to the new pod: a client with a leaf of the old issuer
	// calls a server with a leaf of the new one, under the same load.
	var split meshv1alpha1.TrafficSplit
	if err := m.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &split); err != nil {
		t.Fatal(err)
	}
	m.update(t, &split, func() {
		split.Spec.Backends[0].Weight, split.Spec.Backends[1].Weight = ptr.To[int32](0), ptr.To[int32](100)
	})
	harness.Eventually(t, time.Minute, "traffic on the re-certified web-v2", func() (bool, error) {
		got := m.spread(t, ns, cl.Name, url, 10)
		return got["web-v2"] == 10, fmt.Errorf("%v", got)
	})
	time.Sleep(3 * time.Second)

	n, failed, err := l.stop()
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Logf("%d requests during the rotation, failures %v; new anchor %s", n, failed, newAnchor.Subject)
	if n < 20 || len(failed) > 0 {
		t.Errorf("%d requests, failures by code %v: want none", n, failed)
	}
}
