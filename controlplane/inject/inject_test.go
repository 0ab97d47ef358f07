package inject

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// trustAnchors is a fixed CA certificate, so that the golden files stay put.
func trustAnchors() string {
	b, err := os.ReadFile(filepath.Join("testdata", "trust-anchors.pem"))
	if err != nil {
		panic(err)
	}
	return string(b)
}

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// basePod is the smallest pod a user writes: no labels, annotations,
// volumes or init containers.
func basePod() *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:  "app",
			Image: "example.com/web:1",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
	}
}

func with(mut func(*corev1.Pod)) *corev1.Pod {
	p := basePod()
	mut(p)
	return p
}

func meshedNS() *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{LabelInject: ValueEnabled}}}
}

func plainNS(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

type goldenResult struct {
	Injectable bool     `json:"injectable"`
	Reasons    []string `json:"reasons"`
	Patch      Patch    `json:"patch,omitempty"`
	Error      string   `json:"error,omitempty"`
}

var goldenCases = []struct {
	name string
	pod  *corev1.Pod
	ns   *corev1.Namespace
	cfg  func(*Config)
}{
	{name: "plain", pod: basePod(), ns: meshedNS()},
	{name: "pod-annotation-opt-in", ns: plainNS("shop"), pod: with(func(p *corev1.Pod) {
		p.Annotations = map[string]string{AnnotationInject: ValueEnabled}
		p.Labels = map[string]string{"app.kubernetes.io/name": "web"}
	})},
	{name: "not-enabled", pod: basePod(), ns: plainNS("shop")},
	{name: "opt-out", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Annotations = map[string]string{AnnotationInject: ValueDisabled}
	})},
	{name: "already-injected", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Annotations = map[string]string{AnnotationInjected: "stable"}
	})},
	{name: "kube-system", pod: with(func(p *corev1.Pod) {
		p.Namespace = "kube-system"
		p.Annotations = map[string]string{AnnotationInject: ValueEnabled}
	}), ns: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system", Labels: map[string]string{LabelInject: ValueEnabled}}}},
	{name: "mesh-namespace", pod: with(func(p *corev1.Pod) { p.Namespace = "weft-system" }),
		ns: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system", Labels: map[string]string{LabelInject: ValueEnabled}}}},
	{name: "host-network", ns: meshedNS(), pod: with(func(p *corev1.Pod) { p.Spec.HostNetwork = true })},
	{name: "custom-ports", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Annotations = map[string]string{
			AnnotationSkipInboundPorts:  "9090, 9100-9110",
			AnnotationSkipOutboundPorts: "3306,5432",
		}
	}), cfg: func(c *Config) {
		c.InboundPort, c.OutboundPort, c.AdminPort, c.ProxyUID = 5143, 5140, 5191, 1337
		c.Revision, c.LogLevel = "canary-2", "debug"
		c.SkipInboundPorts = []string{"22"}
		c.SkipOutboundPorts = []string{"25"}
		c.SkipOutboundCIDRs = []string{"169.254.169.254/32", "fd00:ec2::254/128"}
	}},
	{name: "probes", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		c := &p.Spec.Containers[0]
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: "health", ContainerPort: 8081})
		c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("health")}}}
		c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8081)}}}
		c.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8082)}}}
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "grpc", Image: "example.com/grpc:1",
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9000}}}})
	})},
	{name: "probes-https-headers-and-sidecars", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Spec.InitContainers = []corev1.Container{
			{Name: "migrate", Image: "example.com/migrate:1"},
			{Name: "log-shipper", Image: "example.com/ship:1", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
				Ports:         []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9102}},
				StartupProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/up", Port: intstr.FromString("metrics")}}},
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}},
		}
		c := &p.Spec.Containers[0]
		c.LivenessProbe = &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz?deep=1", Port: intstr.FromString("http"),
				Scheme: corev1.URISchemeHTTPS, HTTPHeaders: []corev1.HTTPHeader{{Name: "X-Probe", Value: "kubelet"}, {Name: "Host", Value: "web.local"}}}},
			InitialDelaySeconds: 5, TimeoutSeconds: 3, PeriodSeconds: 7, FailureThreshold: 4,
		}
		// Goes elsewhere than the pod: left alone.
		c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Host: "10.0.0.1", Path: "/", Port: intstr.FromInt32(80)}}}
		// Names no port: left alone, nothing excluded.
		c.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("nope")}}}
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "grpc", Image: "example.com/grpc:1",
			LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9000, Service: ptr.To("orders")}}}})
	})},
	{name: "probes-rewrite-disabled", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Annotations = map[string]string{AnnotationRewriteProbes: ValueDisabled}
		c := &p.Spec.Containers[0]
		c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}}
		c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8082)}}}
	})},
	{name: "probes-rewrite-invalid", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Annotations = map[string]string{AnnotationRewriteProbes: "no"}
	})},
	{name: "trust-anchors", ns: meshedNS(), pod: basePod(), cfg: func(c *Config) { c.TrustAnchorsPEM = trustAnchors() }},
	// The application announces its own metrics: those stay, the proxy's
	// are not announced.
	{name: "app-scrape-annotations", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Annotations = map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "9102"}
	})},
	{name: "access-log", ns: meshedNS(), pod: basePod(), cfg: func(c *Config) { c.AccessLog = "json" }},
	{name: "scrape-annotations-disabled", ns: meshedNS(), pod: basePod(), cfg: func(c *Config) { c.ScrapeAnnotations = false }},
	{name: "resource-overrides", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Annotations = map[string]string{
			AnnotationProxyCPURequest:    "200m",
			AnnotationProxyCPULimit:      "1",
			AnnotationProxyMemoryRequest: "128Mi",
			AnnotationProxyMemoryLimit:   "512Mi",
		}
	})},
	{name: "resource-override-invalid", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Annotations = map[string]string{AnnotationProxyMemoryLimit: "lots"}
	})},
	{name: "resource-override-request-above-limit", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Annotations = map[string]string{AnnotationProxyMemoryRequest: "1Gi"}
	})},
	// The mesh's proxy concurrency reaches the proxy as GOMAXPROCS; the
	// pod's annotation wins over it.
	{name: "concurrency", ns: meshedNS(), pod: basePod(), cfg: func(c *Config) { c.ProxyConcurrency = 2 }},
	{name: "concurrency-annotation", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Annotations = map[string]string{AnnotationProxyConcurrency: "4"}
	}), cfg: func(c *Config) { c.ProxyConcurrency = 2 }},
	{name: "concurrency-annotation-invalid", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Annotations = map[string]string{AnnotationProxyConcurrency: "0"}
	})},
	{name: "skip-ports-invalid", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Annotations = map[string]string{AnnotationSkipOutboundPorts: "3306,mysql"}
	})},
	{name: "existing-init-containers-and-volumes", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "example.com/migrate:1"}}
		p.Spec.Volumes = []corev1.Volume{{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		p.Labels = map[string]string{"app": "web"}
		p.Annotations = map[string]string{"example.com/owner": "team~a"}
	})},
	{name: "container-runs-as-proxy-uid", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr.To[int64](2102)}
	})},
	{name: "pod-runs-as-proxy-uid", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](2102)}
	})},
	{name: "container-overrides-pod-uid", ns: meshedNS(), pod: with(func(p *corev1.Pod) {
		p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](2102)}
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr.To[int64](1000)}
	})},
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			before := tc.pod.DeepCopy()
			var res goldenResult
			res.Injectable, res.Reasons = Injectable(tc.pod, tc.ns, cfg)
			if res.Injectable {
				p, err := Inject(tc.pod, cfg)
				res.Patch = p
				if err != nil {
					res.Error = err.Error()
				}
			}
			got, err := json.MarshalIndent(res, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", tc.name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("reading golden file (run with -update to create it): %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("result differs from %s; got:\n%s", path, got)
			}
			if !equalJSON(t, before, tc.pod) {
				t.Errorf("Injectable or Inject modified the pod")
			}
		})
	}
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(ja, jb)
}

// TestNeverExemptsByMark: the injector exempts the proxy by its UID only.
// A socket-mark exemption (proxy-init --proxy-mark) would let any
// application container with CAP_NET_RAW bypass the mesh.
func TestNeverExemptsByMark(t *testing.T) {
	injected := 0
	for _, tc := range goldenCases {
		cfg := DefaultConfig()
		if tc.cfg != nil {
			tc.cfg(&cfg)
		}
		ok, _ := Injectable(tc.pod, tc.ns, cfg)
		if !ok {
			continue
		}
		p, err := Inject(tc.pod, cfg)
		if err != nil {
			continue
		}
		injected++
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"--proxy-mark", "WEFT_SOCKET_MARK", "socket-mark", "--proxy-uid=0\""} {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("%s: the injected pod contains %q", tc.name, bad)
			}
		}
	}
	if injected == 0 {
		t.Fatal("no golden case was injected")
	}
}

func TestProxyConcurrency(t *testing.T) {
	for _, tc := range []struct {
		annotations map[string]string
		mesh        int32
		want        int32
		wantErr     bool
	}{
		{nil, 0, 0, false},
		{nil, 2, 2, false},
		{map[string]string{AnnotationProxyConcurrency: "4"}, 2, 4, false},
		{map[string]string{AnnotationProxyConcurrency: " 3 "}, 0, 3, false},
		{map[string]string{AnnotationProxyConcurrency: "+3"}, 0, 3, false},
		{map[string]string{AnnotationProxyConcurrency: "64"}, 0, 64, false},
		// The pod's own CPU limit wins over the mesh's concurrency.
		{map[string]string{AnnotationProxyCPULimit: "3"}, 2, 0, false},
		{map[string]string{AnnotationProxyCPULimit: "3", AnnotationProxyConcurrency: "1"}, 2, 1, false},
		{map[string]string{AnnotationProxyConcurrency: ""}, 0, 0, true},
		{map[string]string{AnnotationProxyConcurrency: "0"}, 0, 0, true},
		{map[string]string{AnnotationProxyConcurrency: "65"}, 0, 0, true},
		{map[string]string{AnnotationProxyConcurrency: "2.0"}, 0, 0, true},
		{map[string]string{AnnotationProxyConcurrency: "99999999999999999999"}, 0, 0, true},
	} {
		pod := basePod()
		pod.Annotations = tc.annotations
		cfg := DefaultConfig()
		cfg.ProxyConcurrency = tc.mesh
		got, err := proxyConcurrency(pod, cfg)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("annotations %v, mesh %d: got %d, %v; want %d, error %v", tc.annotations, tc.mesh, got, err, tc.want, tc.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), AnnotationProxyConcurrency) {
			t.Errorf("error %q does not name the annotation", err)
		}
	}
}
