package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controlplane/inject"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/testpki"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Options{GatewayAPI: true}, func(e *testenv.Env) { env = e }))
}

func testCluster(t *testing.T) *cluster {
	t.Helper()
	c, err := newCluster(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	ctx := context.Background()
	for _, o := range objs {
		if err := env.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

// healthyMesh creates what a working v1.0.0 mesh has: the MeshControlPlane
// with the status the operator writes, the control plane Deployment and
// Service, and the injection webhook.
func healthyMesh(t *testing.T) *meshv1alpha1.MeshControlPlane {
	t.Helper()
	ctx := context.Background()
	create(t,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system", Labels: map[string]string{"mesh.weft.dev/inject": "disabled"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system"}},
	)
	mcp := &meshv1alpha1.MeshControlPlane{ObjectMeta: metav1.ObjectMeta{Name: "weft"}, Spec: meshv1alpha1.MeshControlPlaneSpec{Version: "v1.0.0"}}
	create(t, mcp)
	t.Cleanup(func() { env.Client.Delete(context.Background(), mcp) })
	expiry := metav1.NewTime(time.Now().Add(300 * 24 * time.Hour).Truncate(time.Second))
	mcp.Status = meshv1alpha1.MeshControlPlaneStatus{
		ObservedGeneration: mcp.Generation,
		Conditions: []metav1.Condition{{Type: meshv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: meshv1alpha1.ReasonInstalled,
			Message: "ok", ObservedGeneration: mcp.Generation, LastTransitionTime: metav1.Now()}},
		Version:      meshv1alpha1.VersionStatus{Desired: "v1.0.0", Current: "v1.0.0"},
		Revisions:    []meshv1alpha1.RevisionStatus{{Name: "v1-0-0", Version: "v1.0.0", Ready: true, Proxies: 4}},
		Proxies:      meshv1alpha1.ProxiesStatus{Total: 4, ByVersion: []meshv1alpha1.VersionCount{{Version: "v1.0.0", Count: 4}}},
		Certificates: meshv1alpha1.CertificatesStatus{TrustAnchorExpiry: &expiry, IssuerExpiry: &expiry, WebhookExpiry: &expiry, TrustAnchors: 1},
	}
	if err := env.Client.Status().Update(ctx, mcp); err != nil {
		t.Fatal(err)
	}

	labels := map[string]string{"app.kubernetes.io/component": "controlplane", "mesh.weft.dev/revision": "v1-0-0"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-controlplane-v1-0-0", Namespace: "weft-system", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "controlplane", Image: "ghcr.io/weftmesh/weft-controlplane:v1.0.0"}}}},
		},
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "weft-controlplane-v1-0-0", Namespace: "weft-system"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: "webhook", Port: 443}}}}
	create(t, dep, svc)
	t.Cleanup(func() { env.Client.Delete(context.Background(), dep); env.Client.Delete(context.Background(), svc) })
	dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: 2, ReadyReplicas: 2, AvailableReplicas: 2, UpdatedReplicas: 2}
	if err := env.Client.Status().Update(ctx, dep); err != nil {
		t.Fatal(err)
	}
	wh := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: webhookConfigName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: webhookName,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service:  &admissionregistrationv1.ServiceReference{Namespace: "weft-system", Name: "weft-controlplane-v1-0-0", Path: ptr.To("/inject")},
				CABundle: []byte("-----BEGIN CERTIFICATE-----\n"),
			},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"mesh.weft.dev/inject": "enabled"}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			TimeoutSeconds:          ptr.To[int32](5),
			AdmissionReviewVersions: []string{"v1"},
			Rules: []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
		}},
	}
	create(t, wh)
	t.Cleanup(func() { env.Client.Delete(context.Background(), wh) })
	return mcp
}

func check(t *testing.T) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := runCheck(context.Background(), testCluster(t), "", &out)
	return out.String(), err
}

func TestCheckHealthyMesh(t *testing.T) {
	healthyMesh(t)
	out, err := check(t)
	if err != nil {
		t.Fatalf("check failed on a healthy mesh: %v\n%s", err, out)
	}
	for _, want := range []string{
		"✓ CRD meshcontrolplanes.mesh.weft.dev: v1alpha1 served",
		"✓ CRD httproutes.gateway.networking.k8s.io: v1 served",
		"✓ MeshControlPlane: weft ready, version v1.0.0",
		"✓ Control plane pods: weft-controlplane-v1-0-0 2/2",
		"✓ Injection webhook: sidecar.mesh.weft.dev → weft-system/weft-controlplane-v1-0-0",
		"✓ Certificates:",
		"✓ Proxy versions: 4 proxies on v1.0.0",
		"✓ Proxy configuration",
		"All 10 checks passed.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q\n%s", want, out)
		}
	}
	if strings.Contains(out, "✗") {
		t.Errorf("a check failed:\n%s", out)
	}
}

func TestCheckReportsEachProblemWithAHint(t *testing.T) {
	mcp := healthyMesh(t)
	ctx := context.Background()
	soon := metav1.NewTime(time.Now().Add(10 * 24 * time.Hour))
	mcp.Status.Certificates.IssuerExpiry = &soon
	// Ten days is fine for the webhook's 30-day certificate.
	mcp.Status.Certificates.WebhookExpiry = &soon
	mcp.Status.Proxies.ByVersion = []meshv1alpha1.VersionCount{{Version: "v1.0.0", Count: 3}, {Version: "v0.9.0", Count: 1}}
	mcp.Status.Proxies.Stale = 2
	if err := env.Client.Status().Update(ctx, mcp); err != nil {
		t.Fatal(err)
	}
	var wh admissionregistrationv1.MutatingWebhookConfiguration
	if err := env.Client.Get(ctx, client.ObjectKey{Name: webhookConfigName}, &wh); err != nil {
		t.Fatal(err)
	}
	wh.Webhooks[0].TimeoutSeconds = ptr.To[int32](30)
	wh.Webhooks[0].NamespaceSelector = &metav1.LabelSelector{} // selects every namespace
	if err := env.Client.Update(ctx, &wh); err != nil {
		t.Fatal(err)
	}
	var dep appsv1.Deployment
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "weft-controlplane-v1-0-0"}, &dep); err != nil {
		t.Fatal(err)
	}
	dep.Status.AvailableReplicas = 1
	if err := env.Client.Status().Update(ctx, &dep); err != nil {
		t.Fatal(err)
	}

	out, err := check(t)
	if !errors.Is(err, errFailed) {
		t.Fatalf("check passed a broken mesh: %v\n%s", err, out)
	}
	for _, want := range []string{
		"✗ Control plane pods: weft-controlplane-v1-0-0: 1 of 2 available",
		"timeoutSeconds 30",
		"namespaceSelector selects namespace weft-system",
		"namespaceSelector selects namespace kube-system",
		"✗ Certificates: issuer expires in 9 days",
		"✗ Proxy versions: want v1.0.0, but 1 on v0.9.0",
		"✗ Proxy configuration: 2 proxies have not applied the current configuration",
		"5 of 10 checks failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q\n%s", want, out)
		}
	}
	// Every failed line is followed by a hint.
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "✗") && (i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "    hint: ")) {
			t.Errorf("no hint after %q", l)
		}
	}
}

func TestCheckWithoutMesh(t *testing.T) {
	out, err := check(t)
	if !errors.Is(err, errFailed) || !strings.Contains(out, "✗ MeshControlPlane: none found") {
		t.Fatalf("err %v\n%s", err, out)
	}
}

const manifests = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: report, namespace: shop}
spec:
  schedule: "@daily"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: report, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata:
  name: debug
  namespace: shop
  annotations: {mesh.weft.dev/inject: disabled}
spec:
  containers: [{name: sh, image: busybox}]
`

func runCLI(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestInjectManifests(t *testing.T) {
	file := filepath.Join(t.TempDir(), "app.yaml")
	if err := os.WriteFile(file, []byte(manifests), 0o600); err != nil {
		t.Fatal(err)
	}
	anchors := testAnchors(t)
	out, stderr, err := runCLI(t, "", "inject", "-f", file, "--version", "v1.2.3", "--trust-anchors", anchors)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	docs, err := readDocuments(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 4 {
		t.Fatalf("%d documents out, want 4\n%s", len(docs), out)
	}
	// The proxy is a native sidecar: an init container that keeps running.
	containers := func(i int, path ...string) []string {
		cs, _, _ := unstructuredSlice(docs[i].Object, append(path, "containers")...)
		init, _, _ := unstructuredSlice(docs[i].Object, append(path, "initContainers")...)
		return append(init, cs...)
	}
	if got := containers(0, "spec", "template", "spec"); !slices.Contains(got, inject.ProxyContainerName) {
		t.Errorf("Deployment containers %v", got)
	}
	if got := containers(2, "spec", "jobTemplate", "spec", "template", "spec"); !slices.Contains(got, inject.ProxyContainerName) {
		t.Errorf("CronJob containers %v", got)
	}
	if got := containers(3, "spec"); slices.Contains(got, inject.ProxyContainerName) {
		t.Errorf("opted-out pod injected: %v", got)
	}
	if !strings.Contains(stderr, "skipped Pod debug") {
		t.Errorf("skip not reported: %q", stderr)
	}
	if !strings.Contains(out, "WEFT_TRUST_ANCHORS") || !strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Errorf("the proxy does not get the trust anchors:\n%s", out)
	}
	if !strings.Contains(out, "ghcr.io/weftmesh/weft-proxy:v1.2.3") || !strings.Contains(out, "weft-controlplane-v1-2-3.weft-system.svc") {
		t.Errorf("--version not applied:\n%s", out)
	}
	if docs[1].GetKind() != "Service" || strings.Contains(mustYAML(t, docs[1].Object), "weft") {
		t.Errorf("Service changed")
	}

	// Injecting the output again changes nothing: the webhook's idempotency.
	again, stderr, err := runCLI(t, out, "inject", "-f", "-", "--version", "v1.2.3", "--trust-anchors", anchors)
	if err != nil {
		t.Fatal(err)
	}
	if again != out {
		t.Errorf("second injection changed the manifests")
	}
	if !strings.Contains(stderr, "already injected") {
		t.Errorf("second pass did not say why it skipped: %q", stderr)
	}
}

func TestInjectRejectsBadInput(t *testing.T) {
	anchors := testAnchors(t)
	notCA := filepath.Join(t.TempDir(), "junk.pem")
	os.WriteFile(notCA, []byte("not a certificate"), 0o600)
	for name, tc := range map[string]struct {
		stdin string
		args  []string
		want  string
	}{
		"no file":      {"", []string{"inject"}, "-f FILE"},
		"not yaml":     {"kind: [", []string{"inject", "-f", "-", "--trust-anchors", anchors}, "document 1"},
		"no kind":      {"metadata: {name: x}\n", []string{"inject", "-f", "-", "--trust-anchors", anchors}, "has no kind"},
		"bad template": {"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {template: {spec: {containers: 3}}}\n", []string{"inject", "-f", "-", "--trust-anchors", anchors}, "pod template"},
		"bad version":  {"", []string{"inject", "-f", "-", "--version", "1.2", "--trust-anchors", anchors}, "vMAJOR.MINOR.PATCH"},
		"unknown flag": {"", []string{"inject", "--nope"}, "not defined"},
		"missing file": {"", []string{"inject", "-f", "/nonexistent/x.yaml", "--trust-anchors", anchors}, "no such file"},
		"no anchors":   {"", []string{"inject", "-f", "-"}, "--trust-anchors FILE is required"},
		"junk anchors": {"", []string{"inject", "-f", "-", "--trust-anchors", notCA}, "trust anchors"},
		"unknown cmd":  {"", []string{"frobnicate"}, "unknown command"},
		"diag args":    {"", []string{"diag", "pod", "x"}, "usage: weftctl diag proxy POD"},
	} {
		t.Run(name, func(t *testing.T) {
			_, stderr, err := runCLI(t, tc.stdin, tc.args...)
			if err == nil || !strings.Contains(err.Error()+stderr, tc.want) {
				t.Errorf("err %v, stderr %q; want %q", err, stderr, tc.want)
			}
		})
	}
}

// TestDiagThroughPodProxy reads a proxy's admin endpoints the way users do,
// through the API server's pods/proxy subresource. The API server proxies
// only to global unicast pod IPs, so the fake admin server listens on this
// machine's own address (the traffic stays on the machine).
func TestDiagThroughPodProxy(t *testing.T) {
	ip := localUnicastIP(t)
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/identity", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"spiffeID":"spiffe://cluster.local/ns/shop/sa/web","notAfter":"2026-11-26T00:00:00Z"}`))
	})
	mux.HandleFunc("/config", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"version":"abc123","outbound":{"services":[]},"inbound":{}}`))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	ctx := context.Background()
	create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}})
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Labels: map[string]string{inject.LabelRevision: "v1-0-0"}},
		Spec: corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{
			{Name: "web", Image: "nginx"}, {Name: inject.ProxyContainerName, Image: "ghcr.io/weftmesh/weft-proxy:v1.0.0"}}},
	}
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: "shop"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}}}
	create(t, pod, plain)
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if err := env.Client.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	if err := runDiag(ctx, testCluster(t), "shop", "web-1", port, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{`"spiffeID": "spiffe://cluster.local/ns/shop/sa/web"`, `"version": "abc123"`, `revision "v1-0-0"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %s\n%s", want, out.String())
		}
	}
	if err := runDiag(ctx, testCluster(t), "shop", "plain", port, &out); err == nil || !strings.Contains(err.Error(), "not meshed") {
		t.Errorf("unmeshed pod: %v", err)
	}
	if err := runDiag(ctx, testCluster(t), "shop", "nope", port, &out); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing pod: %v", err)
	}
}

func TestVersion(t *testing.T) {
	healthyMesh(t)
	var out bytes.Buffer
	if err := runVersion(context.Background(), testCluster(t), &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"client:", "mesh weft:", "desired v1.0.0, running v1.0.0", "control plane v1-0-0: v1.0.0, ready, 4 proxies", "proxies v1.0.0: 4"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q\n%s", want, out.String())
		}
	}
}

func localUnicastIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skip(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.String()
		}
	}
	t.Skip("this machine has no global unicast IPv4 address for the API server to proxy to")
	return ""
}

func unstructuredSlice(obj map[string]any, path ...string) ([]string, bool, error) {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false, nil
		}
		cur = m[p]
	}
	items, _ := cur.([]any)
	var names []string
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			names = append(names, m["name"].(string))
		}
	}
	return names, true, nil
}

func mustYAML(t *testing.T, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// testAnchors writes a CA certificate and returns its path.
func testAnchors(t *testing.T) string {
	t.Helper()
	ch, err := testpki.NewChain("test root", "test issuer")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(p, ch.BundlePEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
