package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
)

// Names the operator gives the objects it creates (see controllers/).
const (
	webhookConfigName = "weft-proxy-injector"
	webhookName       = "sidecar.mesh.weft.dev"
	controlPlaneName  = "weft-controlplane"
	// certWarning: a trust anchor or issuer expiring sooner fails the
	// check. The webhook's serving certificate lives 30 days and is renewed
	// well before its end, so its threshold is a week.
	certWarning        = 30 * 24 * time.Hour
	webhookCertWarning = 7 * 24 * time.Hour
)

// result is one line of `weftctl check`.
type result struct {
	name string
	ok   bool
	// detail says what was found; hint says what to do when !ok; note is a
	// remark that does not fail the check.
	detail, hint, note string
}

func pass(name, detail string) result { return result{name: name, ok: true, detail: detail} }
func fail(name, detail, hint string) result {
	return result{name: name, detail: detail, hint: hint}
}

// now is replaced by tests.
var now = time.Now

func runCheck(ctx context.Context, c *cluster, meshName string, out io.Writer) error {
	var results []result
	results = append(results, checkCRDs(ctx, c.client)...)
	mcp, r := findMesh(ctx, c.client, meshName)
	results = append(results, r)
	if mcp != nil {
		results = append(results,
			checkControlPlane(ctx, c.client, mcp),
			checkWebhook(ctx, c.client, mcp),
			checkCertificates(mcp),
			checkVersions(mcp),
			checkStale(mcp),
		)
	}
	failed := 0
	for _, r := range results {
		mark := "✓"
		if !r.ok {
			mark = "✗"
			failed++
		}
		fmt.Fprintf(out, "%s %s", mark, r.name)
		if r.detail != "" {
			fmt.Fprintf(out, ": %s", r.detail)
		}
		fmt.Fprintln(out)
		if !r.ok && r.hint != "" {
			fmt.Fprintf(out, "    hint: %s\n", r.hint)
		}
		if r.note != "" {
			fmt.Fprintf(out, "    note: %s\n", r.note)
		}
	}
	if failed > 0 {
		fmt.Fprintf(out, "\n%d of %d checks failed; docs/troubleshooting.md explains each one.\n", failed, len(results))
		return errFailed
	}
	fmt.Fprintf(out, "\nAll %d checks passed.\n", len(results))
	return nil
}

func checkCRDs(ctx context.Context, c client.Client) []result {
	want := []struct{ name, version, hint string }{
		{"meshcontrolplanes.mesh.weft.dev", "v1alpha1", "install the operator: kubectl apply -k config/default, or from OperatorHub"},
		{"trafficsplits.mesh.weft.dev", "v1alpha1", "install the operator: kubectl apply -k config/default, or from OperatorHub"},
		{"authorizationpolicies.mesh.weft.dev", "v1alpha1", "install the operator: kubectl apply -k config/default, or from OperatorHub"},
		{"httproutes.gateway.networking.k8s.io", "v1", "install the Gateway API CRDs (standard channel, v1.x): see docs/install-kustomize.md"},
	}
	var out []result
	for _, w := range want {
		name := "CRD " + w.name
		var crd apiextensionsv1.CustomResourceDefinition
		if err := c.Get(ctx, client.ObjectKey{Name: w.name}, &crd); err != nil {
			if apierrors.IsNotFound(err) {
				out = append(out, fail(name, "not installed", w.hint))
			} else {
				out = append(out, fail(name, err.Error(), "check that your user may read CustomResourceDefinitions"))
			}
			continue
		}
		served := false
		var versions []string
		for _, v := range crd.Spec.Versions {
			versions = append(versions, v.Name)
			served = served || (v.Name == w.version && v.Served)
		}
		established := false
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				established = true
			}
		}
		switch {
		case !served:
			out = append(out, fail(name, fmt.Sprintf("serves %v, not %s", versions, w.version), w.hint))
		case !established:
			out = append(out, fail(name, "not established yet", "wait a few seconds; if it persists, see the CRD's status conditions"))
		default:
			out = append(out, pass(name, w.version+" served"))
		}
	}
	return out
}

func findMesh(ctx context.Context, c client.Client, name string) (*meshv1alpha1.MeshControlPlane, result) {
	const check = "MeshControlPlane"
	var list meshv1alpha1.MeshControlPlaneList
	if err := c.List(ctx, &list); err != nil {
		return nil, fail(check, err.Error(), "is the operator installed? (the CRD check above)")
	}
	var mcp *meshv1alpha1.MeshControlPlane
	switch {
	case name != "":
		for i := range list.Items {
			if list.Items[i].Name == name {
				mcp = &list.Items[i]
			}
		}
		if mcp == nil {
			return nil, fail(check, fmt.Sprintf("%q not found", name), "kubectl get meshcontrolplanes")
		}
	case len(list.Items) == 0:
		return nil, fail(check, "none found", "create one: kubectl apply -f config/samples/mesh_v1alpha1_meshcontrolplane.yaml")
	case len(list.Items) > 1:
		names := make([]string, 0, len(list.Items))
		for _, m := range list.Items {
			names = append(names, m.Name)
		}
		// The oldest one is the mesh; the others report Conflict.
		slices.SortFunc(list.Items, func(a, b meshv1alpha1.MeshControlPlane) int {
			return a.CreationTimestamp.Compare(b.CreationTimestamp.Time)
		})
		return &list.Items[0], fail(check, fmt.Sprintf("%d found (%s): one per cluster is supported", len(names), strings.Join(names, ", ")),
			"delete the extra ones; they report Ready=False with reason Conflict")
	default:
		mcp = &list.Items[0]
	}
	ready := meta.FindStatusCondition(mcp.Status.Conditions, meshv1alpha1.ConditionReady)
	switch {
	case ready == nil:
		return mcp, fail(check, mcp.Name+" has no Ready condition yet", "is the operator running? kubectl -n weft-system get deploy weft-operator")
	case ready.Status != metav1.ConditionTrue:
		return mcp, fail(check, fmt.Sprintf("%s not ready: %s: %s", mcp.Name, ready.Reason, ready.Message), "kubectl describe meshcontrolplane "+mcp.Name)
	case ready.ObservedGeneration != mcp.Generation:
		return mcp, fail(check, fmt.Sprintf("%s: the operator has not processed generation %d yet", mcp.Name, mcp.Generation), "is the operator running? kubectl -n weft-system logs deploy/weft-operator")
	}
	return mcp, pass(check, mcp.Name+" ready, version "+mcp.Spec.Version)
}

func revisionOf(version string) string { return strings.ReplaceAll(version, ".", "-") }

func meshNamespace(mcp *meshv1alpha1.MeshControlPlane) string {
	if mcp.Spec.Namespace != "" {
		return mcp.Spec.Namespace
	}
	return "weft-system"
}

func checkControlPlane(ctx context.Context, c client.Client, mcp *meshv1alpha1.MeshControlPlane) result {
	const check = "Control plane pods"
	ns := meshNamespace(mcp)
	revs := map[string]bool{revisionOf(mcp.Spec.Version): true}
	for _, r := range mcp.Status.Revisions {
		revs[r.Name] = true
	}
	var notReady, ready []string
	for _, rev := range slices.Sorted(func(yield func(string) bool) {
		for r := range revs {
			if !yield(r) {
				return
			}
		}
	}) {
		var d appsv1.Deployment
		name := controlPlaneName + "-" + rev
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &d); err != nil {
			notReady = append(notReady, fmt.Sprintf("%s: %v", name, shortErr(err)))
			continue
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		if d.Status.AvailableReplicas < want || d.Status.ObservedGeneration < d.Generation {
			notReady = append(notReady, fmt.Sprintf("%s: %d of %d available", name, d.Status.AvailableReplicas, want))
			continue
		}
		ready = append(ready, fmt.Sprintf("%s %d/%d", name, d.Status.AvailableReplicas, want))
	}
	if len(notReady) > 0 {
		return fail(check, strings.Join(notReady, "; "), "kubectl -n "+ns+" describe deploy -l app.kubernetes.io/component=controlplane; look for image pull or scheduling errors")
	}
	return pass(check, strings.Join(ready, ", "))
}

func checkWebhook(ctx context.Context, c client.Client, mcp *meshv1alpha1.MeshControlPlane) result {
	const check = "Injection webhook"
	var cfg admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: webhookConfigName}, &cfg); err != nil {
		return fail(check, "MutatingWebhookConfiguration "+webhookConfigName+": "+shortErr(err), "the operator creates it once the control plane is ready; see the MeshControlPlane's conditions")
	}
	var wh *admissionregistrationv1.MutatingWebhook
	for i := range cfg.Webhooks {
		if cfg.Webhooks[i].Name == webhookName {
			wh = &cfg.Webhooks[i]
		}
	}
	if wh == nil {
		return fail(check, "webhook "+webhookName+" missing from "+webhookConfigName, "delete the configuration; the operator recreates it")
	}
	var problems []string
	ns := meshNamespace(mcp)
	if len(wh.ClientConfig.CABundle) == 0 {
		problems = append(problems, "no caBundle (the API server cannot verify the injector)")
	}
	if s := wh.ClientConfig.Service; s == nil {
		problems = append(problems, "does not point at a Service")
	} else if s.Namespace != ns || !strings.HasPrefix(s.Name, controlPlaneName+"-") {
		problems = append(problems, fmt.Sprintf("points at %s/%s, not a control plane in %s", s.Namespace, s.Name, ns))
	} else {
		var svc corev1.Service
		if err := c.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Name}, &svc); err != nil {
			problems = append(problems, "its Service "+s.Namespace+"/"+s.Name+": "+shortErr(err))
		}
	}
	if wh.TimeoutSeconds != nil && *wh.TimeoutSeconds > 10 {
		problems = append(problems, fmt.Sprintf("timeoutSeconds %d: pod creation can stall that long when the injector is slow (want ≤ 10)", *wh.TimeoutSeconds))
	}
	if wh.SideEffects == nil || *wh.SideEffects != admissionregistrationv1.SideEffectClassNone {
		problems = append(problems, "sideEffects is not None (dry-run requests would be refused)")
	}
	if !slices.Contains(wh.AdmissionReviewVersions, "v1") {
		problems = append(problems, "admissionReviewVersions lacks v1")
	}
	// The control plane's own namespace and kube-system must never be
	// injected: the injector would need itself to start.
	for _, name := range []string{ns, "kube-system"} {
		var n corev1.Namespace
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &n); err != nil {
			continue
		}
		for _, w := range cfg.Webhooks {
			if selects(w.NamespaceSelector, n.Labels) {
				problems = append(problems, w.Name+": namespaceSelector selects namespace "+name)
			}
		}
	}
	if len(problems) > 0 {
		return fail(check, strings.Join(problems, "; "), "the operator owns this object: fix spec.injection in the MeshControlPlane, or delete the configuration so that it is recreated")
	}
	r := pass(check, fmt.Sprintf("%s → %s/%s", webhookName, wh.ClientConfig.Service.Namespace, wh.ClientConfig.Service.Name))
	if wh.FailurePolicy != nil && *wh.FailurePolicy == admissionregistrationv1.Ignore {
		r.note = "failurePolicy Ignore: pods created while the injector is down start without a proxy (status.proxies.uninjected counts them)"
	}
	return r
}

func selects(sel *metav1.LabelSelector, l map[string]string) bool {
	if sel == nil {
		return true
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return s.Matches(labels.Set(l))
}

func checkCertificates(mcp *meshv1alpha1.MeshControlPlane) result {
	const check = "Certificates"
	c := mcp.Status.Certificates
	var soon, fine []string
	for _, cert := range []struct {
		name string
		t    *metav1.Time
		warn time.Duration
	}{{"trust anchor", c.TrustAnchorExpiry, certWarning}, {"issuer", c.IssuerExpiry, certWarning}, {"webhook", c.WebhookExpiry, webhookCertWarning}} {
		if cert.t == nil {
			soon = append(soon, cert.name+" expiry unknown")
			continue
		}
		left := cert.t.Sub(now())
		days := int(left.Hours() / 24)
		switch {
		case left <= 0:
			soon = append(soon, fmt.Sprintf("%s EXPIRED on %s", cert.name, cert.t.UTC().Format(time.DateOnly)))
		case left < cert.warn:
			soon = append(soon, fmt.Sprintf("%s expires in %d days (%s)", cert.name, days, cert.t.UTC().Format(time.DateOnly)))
		default:
			fine = append(fine, fmt.Sprintf("%s %dd", cert.name, days))
		}
	}
	if len(soon) > 0 {
		return fail(check, strings.Join(soon, "; "), "the operator renews the issuer at 2/3 of its life; if it has not, see docs/certificate-rotation.md (cert-manager: kubectl describe certificate weft-issuer -n "+meshNamespace(mcp)+")")
	}
	return pass(check, strings.Join(fine, ", ")+" left")
}

func checkVersions(mcp *meshv1alpha1.MeshControlPlane) result {
	const check = "Proxy versions"
	want := mcp.Spec.Version
	var old []string
	total := int32(0)
	for _, v := range mcp.Status.Proxies.ByVersion {
		total += v.Count
		if v.Version != want {
			old = append(old, fmt.Sprintf("%d on %s", v.Count, v.Version))
		}
	}
	if len(old) > 0 {
		hint := "restart the workloads (kubectl rollout restart) or let the upgrade finish"
		if u := mcp.Status.Upgrade; u != nil && u.Phase != "" {
			hint = fmt.Sprintf("an upgrade is in phase %s (%d of %d workloads done)", u.Phase, u.WorkloadsUpdated, u.WorkloadsTotal)
			if u.FailedWorkload != "" {
				hint += "; stopped at " + u.FailedWorkload
			}
		}
		return fail(check, fmt.Sprintf("want %s, but %s", want, strings.Join(old, ", ")), hint)
	}
	r := pass(check, fmt.Sprintf("%d proxies on %s", total, want))
	if n := mcp.Status.Proxies.Uninjected; n > 0 {
		r.note = fmt.Sprintf("%d pods in injected namespaces run without a proxy: restart them", n)
	}
	return r
}

func checkStale(mcp *meshv1alpha1.MeshControlPlane) result {
	const check = "Proxy configuration"
	if n := mcp.Status.Proxies.Stale; n > 0 {
		return fail(check, fmt.Sprintf("%d proxies have not applied the current configuration", n),
			"weftctl diag proxy POD shows what a proxy holds; a rejected snapshot is logged by the proxy and the control plane")
	}
	return pass(check, "every connected proxy runs the current configuration")
}

func shortErr(err error) string {
	if apierrors.IsNotFound(err) {
		return "not found"
	}
	return err.Error()
}
