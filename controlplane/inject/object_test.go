package inject

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/weftmesh/weft/proxy/sidecar"
)

// TestInjectObject checks, on the injected pod itself rather than on the
// patch, what a user would see with kubectl get pod -o yaml.
func TestInjectObject(t *testing.T) {
	byName := map[string]*corev1.Pod{}
	for _, tc := range goldenCases {
		byName[tc.name] = tc.pod
	}
	cfg := DefaultConfig()
	// As the webhook server always sets them.
	cfg.TrustAnchorsPEM = trustAnchors()

	for _, tc := range []struct {
		name  string
		pod   *corev1.Pod
		check func(t *testing.T, got *corev1.Pod)
	}{
		{"plain pod gets proxy-init, then the sidecar", byName["plain"], func(t *testing.T, got *corev1.Pod) {
			if names := containerNames(got.Spec.InitContainers); !slices.Equal(names, []string{InitContainerName, ProxyContainerName}) {
				t.Errorf("init containers = %v", names)
			}
			proxy := got.Spec.InitContainers[1]
			if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				t.Errorf("sidecar restartPolicy = %v, want Always", proxy.RestartPolicy)
			}
			sc := proxy.SecurityContext
			if *sc.RunAsUser != 2102 || !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation ||
				!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
				t.Errorf("sidecar security context = %+v", sc)
			}
			initSC := got.Spec.InitContainers[0].SecurityContext
			if !slices.Equal(initSC.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) || *initSC.RunAsUser != 0 {
				t.Errorf("proxy-init security context = %+v", initSC)
			}
			if got.Spec.InitContainers[0].Args[0] != "init" || got.Spec.InitContainers[0].Image != cfg.ProxyImage {
				t.Errorf("proxy-init = %v %v", got.Spec.InitContainers[0].Image, got.Spec.InitContainers[0].Args)
			}
			if len(got.Spec.Volumes) != 1 || got.Spec.Volumes[0].Projected.Sources[0].ServiceAccountToken.Audience != "weft" {
				t.Errorf("volumes = %+v", got.Spec.Volumes)
			}
			if m := proxy.VolumeMounts; len(m) != 1 || m[0].Name != TokenVolumeName || !m[0].ReadOnly {
				t.Errorf("sidecar mounts = %+v", m)
			}
			env := map[string]string{}
			for _, e := range proxy.Env {
				if e.ValueFrom != nil {
					env[e.Name] = e.ValueFrom.FieldRef.FieldPath
				}
			}
			for name, field := range map[string]string{EnvPodName: "metadata.name", EnvPodNamespace: "metadata.namespace",
				EnvServiceAccount: "spec.serviceAccountName", EnvRevision: "metadata.labels['mesh.weft.dev/revision']"} {
				if env[name] != field {
					t.Errorf("env %s from %q, want %q", name, env[name], field)
				}
			}
			if got.Annotations[AnnotationInjected] != "stable" || got.Labels[LabelRevision] != "stable" {
				t.Errorf("annotations %v labels %v lack the injection markers", got.Annotations, got.Labels)
			}
			if !slices.Equal(containerNames(got.Spec.Containers), []string{"app"}) {
				t.Errorf("application containers changed: %v", containerNames(got.Spec.Containers))
			}
		}},
		{"existing init containers, volumes and escaped keys are kept", byName["existing-init-containers-and-volumes"], func(t *testing.T, got *corev1.Pod) {
			if names := containerNames(got.Spec.InitContainers); !slices.Equal(names, []string{InitContainerName, ProxyContainerName, "migrate"}) {
				t.Errorf("init containers = %v", names)
			}
			if len(got.Spec.Volumes) != 2 || got.Spec.Volumes[0].Name != "cache" || got.Spec.Volumes[1].Name != TokenVolumeName {
				t.Errorf("volumes = %v", got.Spec.Volumes)
			}
			if got.Annotations["example.com/owner"] != "team~a" || got.Annotations[AnnotationInjected] != "stable" ||
				got.Labels["app"] != "web" || got.Labels[LabelRevision] != "stable" {
				t.Errorf("annotations %v labels %v", got.Annotations, got.Labels)
			}
		}},
		{"probes go through the proxy's admin port", byName["probes"], func(t *testing.T, got *corev1.Pod) {
			if args := strings.Join(got.Spec.InitContainers[0].Args, " "); strings.Contains(args, "--skip-inbound-ports") {
				t.Errorf("proxy-init args %q exclude ports from the proxy", args)
			}
			for _, c := range got.Spec.Containers {
				for kind, p := range map[string]*corev1.Probe{ProbeLiveness: c.LivenessProbe, ProbeReadiness: c.ReadinessProbe, ProbeStartup: c.StartupProbe} {
					if p == nil {
						continue
					}
					if h := p.HTTPGet; h == nil || h.Port.IntValue() != int(cfg.AdminPort) || h.Path != AppProbePath(c.Name, kind) || p.TCPSocket != nil || p.GRPC != nil {
						t.Errorf("container %s %s probe = %+v, want GET :%d%s", c.Name, kind, p.ProbeHandler, cfg.AdminPort, AppProbePath(c.Name, kind))
					}
				}
			}
			// What the proxy reads back is what the pod asked for.
			probes, err := sidecar.ParseAppProbes(envOf(got.Spec.InitContainers[1], EnvAppProbes))
			if err != nil {
				t.Fatal(err)
			}
			want := []sidecar.AppProbe{
				{Container: "app", Kind: "liveness", Type: "http", Port: 8081, Scheme: "HTTP", Path: "/healthz", TimeoutSeconds: 1},
				{Container: "app", Kind: "readiness", Type: "http", Port: 8081, Scheme: "HTTP", Path: "/ready", TimeoutSeconds: 1},
				{Container: "app", Kind: "startup", Type: "tcp", Port: 8082, TimeoutSeconds: 1},
				{Container: "grpc", Kind: "readiness", Type: "grpc", Port: 9000, TimeoutSeconds: 1},
			}
			if !reflect.DeepEqual(probes, want) {
				t.Errorf("WEFT_APP_PROBES = %+v\nwant %+v", probes, want)
			}
		}},
		{"probe settings are kept and the proxy parses headers and services", byName["probes-https-headers-and-sidecars"], func(t *testing.T, got *corev1.Pod) {
			live := got.Spec.Containers[0].LivenessProbe
			if live.InitialDelaySeconds != 5 || live.TimeoutSeconds != 3 || live.PeriodSeconds != 7 || live.FailureThreshold != 4 {
				t.Errorf("liveness probe timing changed: %+v", live)
			}
			if h := got.Spec.Containers[0].ReadinessProbe.HTTPGet; h.Host != "10.0.0.1" || h.Port.IntValue() != 80 {
				t.Errorf("probe with its own host was rewritten: %+v", h)
			}
			if s := got.Spec.Containers[0].StartupProbe.TCPSocket; s == nil || s.Port.StrVal != "nope" {
				t.Errorf("probe with an unknown port was rewritten: %+v", got.Spec.Containers[0].StartupProbe)
			}
			if names := containerNames(got.Spec.InitContainers); !slices.Equal(names, []string{InitContainerName, ProxyContainerName, "migrate", "log-shipper"}) {
				t.Fatalf("init containers = %v", names)
			}
			if h := got.Spec.InitContainers[3].StartupProbe.HTTPGet; h == nil || h.Path != "/app-probe/log-shipper/startup" {
				t.Errorf("native sidecar's probe = %+v", got.Spec.InitContainers[3].StartupProbe)
			}
			probes, err := sidecar.ParseAppProbes(envOf(got.Spec.InitContainers[1], EnvAppProbes))
			if err != nil {
				t.Fatal(err)
			}
			if len(probes) != 3 || probes[1].Scheme != "HTTPS" || probes[1].Path != "/healthz?deep=1" || len(probes[1].Headers) != 2 ||
				probes[1].TimeoutSeconds != 3 || probes[2].Service != "orders" {
				t.Errorf("WEFT_APP_PROBES = %+v", probes)
			}
		}},
		{"probe rewriting can be turned off", byName["probes-rewrite-disabled"], func(t *testing.T, got *corev1.Pod) {
			if args := strings.Join(got.Spec.InitContainers[0].Args, " "); !strings.Contains(args, "--skip-inbound-ports=8080,8082") {
				t.Errorf("proxy-init args %q do not skip the probe ports", args)
			}
			if p := got.Spec.Containers[0].LivenessProbe.HTTPGet; p.Port.StrVal != "http" || p.Path != "/healthz" {
				t.Errorf("application probe changed: %+v", p)
			}
			if v := envOf(got.Spec.InitContainers[1], EnvAppProbes); v != "" {
				t.Errorf("%s = %q, want unset", EnvAppProbes, v)
			}
		}},
		{"trust anchors reach the proxy", byName["trust-anchors"], func(t *testing.T, got *corev1.Pod) {
			if v := envOf(got.Spec.InitContainers[1], EnvTrustAnchors); v != trustAnchors() {
				t.Errorf("%s = %q", EnvTrustAnchors, v)
			}
		}},
		{"resource annotations override the defaults", byName["resource-overrides"], func(t *testing.T, got *corev1.Pod) {
			r := got.Spec.InitContainers[1].Resources
			for _, c := range []struct {
				list corev1.ResourceList
				name corev1.ResourceName
				want string
			}{{r.Requests, "cpu", "200m"}, {r.Limits, "cpu", "1"}, {r.Requests, "memory", "128Mi"}, {r.Limits, "memory", "512Mi"}} {
				if q := c.list[c.name]; q.Cmp(resource.MustParse(c.want)) != 0 {
					t.Errorf("%s = %s, want %s", c.name, q.String(), c.want)
				}
			}
		}},
		{"empty but non-nil maps and slices", with(func(p *corev1.Pod) {
			p.Annotations, p.Labels = map[string]string{}, map[string]string{}
			p.Spec.InitContainers, p.Spec.Volumes = []corev1.Container{}, []corev1.Volume{}
		}), func(t *testing.T, got *corev1.Pod) {
			if len(got.Spec.InitContainers) != 2 || len(got.Spec.Volumes) != 1 ||
				got.Annotations[AnnotationInjected] != "stable" || got.Labels[LabelRevision] != "stable" {
				t.Errorf("injected pod = %+v", got)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := InjectObject(tc.pod, cfg)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, got)

			// Injection happens once: the result is not injectable again,
			// and Inject refuses it.
			if ok, reasons := Injectable(got, meshedNS(), cfg); ok {
				t.Errorf("injected pod is injectable again: %v", reasons)
			}
			if _, err := InjectObject(got, cfg); err == nil || !strings.Contains(err.Error(), "already injected") {
				t.Errorf("second InjectObject() error = %v, want already injected", err)
			}
			// Even without the annotation, the containers give it away.
			delete(got.Annotations, AnnotationInjected)
			if _, err := Inject(got, cfg); err == nil || !strings.Contains(err.Error(), "already has a container named") {
				t.Errorf("Inject() on a pod with the proxy error = %v", err)
			}
		})
	}
}

func TestInjectObjectRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, golden, wantErr string
	}{
		{"container as the proxy UID", "container-runs-as-proxy-uid", `container "app" runs as UID 2102, the UID reserved for the weft proxy`},
		{"bad quantity", "resource-override-invalid", `mesh.weft.dev/proxy-memory-limit="lots" is not a valid quantity`},
		{"bad skip ports", "skip-ports-invalid", `"mysql" is not a port`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pod *corev1.Pod
			for _, g := range goldenCases {
				if g.name == tc.golden {
					pod = g.pod
				}
			}
			got, err := InjectObject(pod, DefaultConfig())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("InjectObject() = %v, %v; want error containing %q", got, err, tc.wantErr)
			}
		})
	}
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{"a": "a", "mesh.weft.dev/injected": "mesh.weft.dev~1injected", "a~b/c": "a~0b~1c"} {
		if got := escape(in); got != want {
			t.Errorf("escape(%q) = %q, want %q", in, got, want)
		}
	}
}

func envOf(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func containerNames(cs []corev1.Container) []string {
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return names
}
