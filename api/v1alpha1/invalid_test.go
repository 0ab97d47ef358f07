package v1alpha1_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	mcpHead = "apiVersion: mesh.weft.dev/v1alpha1\nkind: MeshControlPlane\nmetadata: {name: %s}\n"
	tsHead  = "apiVersion: mesh.weft.dev/v1alpha1\nkind: TrafficSplit\nmetadata: {name: %s, namespace: default}\n"
	apHead  = "apiVersion: mesh.weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: %s, namespace: default}\n"

	apTarget = "  targetRef: {group: \"\", kind: Service, name: api}\n"
)

// invalidCase is an object the API server must refuse, at create or, when
// update is set, when the valid object is changed by update.
type invalidCase struct {
	name   string
	head   string
	spec   string
	update func(u *unstructured.Unstructured)
	// want are substrings of the error the user sees.
	want []string
}

func set(v any, path ...string) func(*unstructured.Unstructured) {
	return func(u *unstructured.Unstructured) {
		if err := unstructured.SetNestedField(u.Object, v, path...); err != nil {
			panic(err)
		}
	}
}

var invalidObjects = []invalidCase{
	// MeshControlPlane
	{name: "mcp version without v", head: mcpHead, spec: `spec: {version: "1.2.3"}`,
		want: []string{"spec.version", "version must look like v1.2.3"}},
	{name: "mcp version with two parts", head: mcpHead, spec: `spec: {version: v1.2}`,
		want: []string{"version must look like v1.2.3"}},
	{name: "mcp version with leading zero", head: mcpHead, spec: `spec: {version: v1.02.3}`,
		want: []string{"version must look like v1.2.3"}},
	{name: "mcp version with pre-release", head: mcpHead, spec: `spec: {version: v1.2.3-rc.1}`,
		want: []string{"no pre-release suffix"}},
	{name: "mcp without version", head: mcpHead, spec: `spec: {trustDomain: cluster.local}`,
		want: []string{"spec.version: Required value"}},
	{name: "mcp trust domain uppercase", head: mcpHead, spec: `spec: {version: v1.0.0, trustDomain: Cluster.Local}`,
		want: []string{"trustDomain must be a lowercase DNS name"}},
	{name: "mcp trust domain with underscore", head: mcpHead, spec: `spec: {version: v1.0.0, trustDomain: my_mesh}`,
		want: []string{"trustDomain must be a lowercase DNS name"}},
	{name: "mcp mtls mode unknown", head: mcpHead, spec: `spec: {version: v1.0.0, mtls: {mode: "Off"}}`,
		want: []string{"spec.mtls.mode", `Unsupported value: "Off"`, `"Strict"`, `"Permissive"`}},
	{name: "mcp both identity sources", head: mcpHead,
		spec: `spec: {version: v1.0.0, identity: {builtInCA: {}, certManager: {issuerRef: {name: x}}}}`,
		want: []string{"identity needs exactly one of builtInCA or certManager"}},
	{name: "mcp no identity source", head: mcpHead, spec: `spec: {version: v1.0.0, identity: {leafLifetime: 12h}}`,
		want: []string{"identity needs exactly one of builtInCA or certManager"}},
	{name: "mcp leaf lifetime too short", head: mcpHead, spec: `spec: {version: v1.0.0, identity: {builtInCA: {}, leafLifetime: 30m}}`,
		want: []string{"identity.leafLifetime must be between 1h and 168h"}},
	{name: "mcp leaf lifetime too long", head: mcpHead, spec: `spec: {version: v1.0.0, identity: {builtInCA: {}, leafLifetime: 200h}}`,
		want: []string{"identity.leafLifetime must be between 1h and 168h"}},
	{name: "mcp leaf lifetime not a duration", head: mcpHead, spec: `spec: {version: v1.0.0, identity: {builtInCA: {}, leafLifetime: soon}}`,
		want: []string{"spec.identity.leafLifetime", "should match"}},
	{name: "mcp issuer not longer than leaf", head: mcpHead,
		spec: `spec: {version: v1.0.0, identity: {builtInCA: {}, issuerLifetime: 48h, leafLifetime: 72h}}`,
		want: []string{"identity.issuerLifetime must be longer than identity.leafLifetime"}},
	{name: "mcp issuer kind unknown", head: mcpHead,
		spec: `spec: {version: v1.0.0, identity: {certManager: {issuerRef: {name: x, kind: Vault}}}}`,
		want: []string{"spec.identity.certManager.issuerRef.kind", `Unsupported value: "Vault"`}},
	{name: "mcp batch size zero", head: mcpHead, spec: `spec: {version: v1.0.0, upgrade: {batchSize: 0}}`,
		want: []string{"spec.upgrade.batchSize", "greater than or equal to 1"}},
	{name: "mcp max unavailable zero", head: mcpHead, spec: `spec: {version: v1.0.0, upgrade: {maxUnavailable: 0}}`,
		want: []string{"upgrade.maxUnavailable must be a count of at least 1 or a percentage"}},
	{name: "mcp max unavailable over 100%", head: mcpHead, spec: `spec: {version: v1.0.0, upgrade: {maxUnavailable: "150%"}}`,
		want: []string{"upgrade.maxUnavailable must be a count of at least 1 or a percentage"}},
	{name: "mcp skipped port out of range", head: mcpHead, spec: `spec: {version: v1.0.0, proxy: {skipInboundPorts: [70000]}}`,
		want: []string{"spec.proxy.skipInboundPorts[0]", "less than or equal to 65535"}},
	{name: "mcp skipped port zero", head: mcpHead, spec: `spec: {version: v1.0.0, proxy: {skipOutboundPorts: [0]}}`,
		want: []string{"spec.proxy.skipOutboundPorts[0]", "greater than or equal to 1"}},
	{name: "mcp proxy concurrency zero", head: mcpHead, spec: `spec: {version: v1.0.0, proxy: {concurrency: 0}}`,
		want: []string{"spec.proxy.concurrency", "greater than or equal to 1"}},
	{name: "mcp proxy concurrency too high", head: mcpHead, spec: `spec: {version: v1.0.0, proxy: {concurrency: 65}}`,
		want: []string{"spec.proxy.concurrency", "less than or equal to 64"}},
	{name: "mcp log level unknown", head: mcpHead, spec: `spec: {version: v1.0.0, proxy: {logLevel: verbose}}`,
		want: []string{"spec.proxy.logLevel", `Unsupported value: "verbose"`}},
	{name: "mcp registry with scheme", head: mcpHead, spec: `spec: {version: v1.0.0, registry: "https://registry.example.com/"}`,
		want: []string{"registry must be a host and optional path without scheme"}},
	{name: "mcp default policy unknown", head: mcpHead, spec: `spec: {version: v1.0.0, authorization: {defaultPolicy: Audit}}`,
		want: []string{"spec.authorization.defaultPolicy", `Unsupported value: "Audit"`}},
	{name: "mcp trust domain changed", head: mcpHead, spec: `spec: {version: v1.0.0}`,
		update: set("example.org", "spec", "trustDomain"),
		want:   []string{"trustDomain is immutable"}},
	{name: "mcp namespace changed", head: mcpHead, spec: `spec: {version: v1.0.0}`,
		update: set("mesh", "spec", "namespace"),
		want:   []string{"namespace is immutable"}},

	// TrafficSplit
	{name: "ts no backends", head: tsHead, spec: `spec: {service: web, backends: []}`,
		want: []string{"spec.backends", "at least 1 item"}},
	{name: "ts seventeen backends", head: tsHead, spec: "spec:\n  service: web\n  backends:\n" + manyBackends(17),
		want: []string{"spec.backends", "at most 16 items"}},
	{name: "ts duplicate backends", head: tsHead,
		spec: `spec: {service: web, backends: [{name: a, port: 80}, {name: a, port: 80, weight: 2}]}`,
		want: []string{"backends must be unique"}},
	{name: "ts weight too large", head: tsHead, spec: `spec: {service: web, backends: [{name: a, port: 80, weight: 1000001}]}`,
		want: []string{"spec.backends[0].weight", "less than or equal to 1000000"}},
	{name: "ts negative weight", head: tsHead, spec: `spec: {service: web, backends: [{name: a, port: 80, weight: -1}]}`,
		want: []string{"spec.backends[0].weight", "greater than or equal to 0"}},
	{name: "ts backend not a service", head: tsHead,
		spec: `spec: {service: web, backends: [{name: a, kind: ConfigMap, port: 80}]}`,
		want: []string{"backends must be Services"}},
	{name: "ts backend in another namespace", head: tsHead,
		spec: `spec: {service: web, backends: [{name: a, namespace: other, port: 80}]}`,
		want: []string{"backends must be in the TrafficSplit's own namespace: leave backends[].namespace unset"}},
	{name: "ts backend without port", head: tsHead, spec: `spec: {service: web, backends: [{name: a}]}`,
		want: []string{"Must have port for Service reference"}},
	{name: "ts service not a name", head: tsHead, spec: `spec: {service: Web_1, backends: [{name: a, port: 80}]}`,
		want: []string{"service must be the name of a Service"}},
	{name: "ts match path relative", head: tsHead,
		spec: `spec: {service: web, backends: [{name: a, port: 80}], matches: [{path: {type: PathPrefix, value: api}}]}`,
		want: []string{"value must be an absolute path and start with '/'"}},
	{name: "ts service changed", head: tsHead, spec: `spec: {service: web, backends: [{name: a, port: 80}]}`,
		update: set("api", "spec", "service"),
		want:   []string{"service is immutable"}},

	// AuthorizationPolicy
	{name: "ap identity not spiffe", head: apHead,
		spec: "spec:\n" + apTarget + "  rules: [{from: [{identities: [\"https://example.com/ns/a/sa/b\"]}]}]",
		want: []string{"identities must be SPIFFE IDs such as spiffe://cluster.local/ns/default/sa/web"}},
	{name: "ap identity uppercase trust domain", head: apHead,
		spec: "spec:\n" + apTarget + "  rules: [{from: [{identities: [\"spiffe://Cluster.Local/ns/a/sa/b\"]}]}]",
		want: []string{"identities must be SPIFFE IDs"}},
	{name: "ap identity with dot-dot segment", head: apHead,
		spec: "spec:\n" + apTarget + "  rules: [{from: [{identities: [\"spiffe://cluster.local/ns/../sa/b\"]}]}]",
		want: []string{"identities must be SPIFFE IDs"}},
	{name: "ap path without slash", head: apHead,
		spec: "spec:\n" + apTarget + "  rules: [{to: [{paths: [{value: admin}]}]}]",
		want: []string{"paths[].value must start with '/'"}},
	{name: "ap path not normalized", head: apHead,
		spec: "spec:\n" + apTarget + "  rules: [{to: [{paths: [{value: /a//b}]}]}]",
		want: []string{"paths[].value must be a normalized path"}},
	{name: "ap method unknown", head: apHead,
		spec: "spec:\n" + apTarget + "  rules: [{to: [{methods: [FETCH]}]}]",
		want: []string{"methods[0]", `Unsupported value: "FETCH"`}},
	{name: "ap port zero", head: apHead,
		spec: "spec:\n" + apTarget + "  rules: [{to: [{ports: [0]}]}]",
		want: []string{"ports[0]", "greater than or equal to 1"}},
	{name: "ap target a deployment", head: apHead,
		spec: "spec:\n  targetRef: {group: apps, kind: Deployment, name: api}\n  rules: [{to: [{ports: [80]}]}]",
		want: []string{"targetRef must be a Service or a Namespace"}},
	{name: "ap action unknown", head: apHead,
		spec: "spec:\n" + apTarget + "  action: Audit\n  rules: [{to: [{ports: [80]}]}]",
		want: []string{"spec.action", `Unsupported value: "Audit"`}},
	{name: "ap unauthenticated with identities", head: apHead,
		spec: "spec:\n" + apTarget + "  rules: [{from: [{unauthenticated: true, identities: [\"*\"]}]}]",
		want: []string{"unauthenticated cannot be combined with identities"}},
	{name: "ap empty rule", head: apHead,
		spec: "spec:\n" + apTarget + "  rules: [{}]",
		want: []string{"a rule needs at least one of from or to"}},
	{name: "ap empty from entry", head: apHead,
		spec: "spec:\n" + apTarget + "  rules: [{from: [{}]}]",
		want: []string{"a from entry needs identities, namespaces, serviceAccounts or unauthenticated"}},
	{name: "ap empty to entry", head: apHead,
		spec: "spec:\n" + apTarget + "  rules: [{to: [{}]}]",
		want: []string{"a to entry needs ports, methods or paths"}},
	{name: "ap bad namespace name", head: apHead,
		spec: "spec:\n" + apTarget + "  rules: [{from: [{namespaces: [Prod]}]}]",
		want: []string{"namespaces must be namespace names"}},
}

func manyBackends(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "  - {name: b%d, port: 80}\n", i)
	}
	return b.String()
}

func TestInvalidObjectsAreRejected(t *testing.T) {
	if len(invalidObjects) < 25 {
		t.Fatalf("only %d invalid cases; the API promises at least 25", len(invalidObjects))
	}
	for i, tc := range invalidObjects {
		t.Run(tc.name, func(t *testing.T) {
			obj := decode(t, fmt.Sprintf(tc.head, fmt.Sprintf("invalid-%d", i))+tc.spec)
			err := create(t, obj)
			if tc.update != nil {
				if err != nil {
					t.Fatalf("the valid object to update was rejected: %v", err)
				}
				cur := obj.DeepCopy()
				if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), cur); err != nil {
					t.Fatal(err)
				}
				tc.update(cur)
				err = env.Client.Update(context.Background(), cur)
			}
			if err == nil {
				t.Fatalf("accepted; want an error containing %q", tc.want)
			}
			t.Logf("rejected as a user sees it: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}
