package webhook

import (
	"context"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/controlplane/inject"
)

// TestCertRotationThroughAPIServer rotates the serving certificate to one
// from a new CA, as the operator does (new certificate on disk, then the new
// CA in the webhook's caBundle), and checks that the API server keeps getting
// pods injected. failurePolicy is Fail here, so a certificate the API server
// does not accept shows as an error rather than as a pod left alone.
func TestCertRotationThroughAPIServer(t *testing.T) {
	ctx := context.Background()
	c := suite.env.Client
	oldCA, newCA, unrelatedCA := newCA(t), newCA(t), newCA(t)
	vol := &secretVolume{dir: t.TempDir()}
	crt, key := oldCA.serving(t, 1)
	vol.write(t, map[string][]byte{CertFile: crt, KeyFile: key})

	srvCtx, cancel := context.WithCancel(ctx)
	addrs := make(chan net.Addr, 1)
	done := make(chan error, 1)
	h := fakeHandler(t)
	h.Namespaces, h.APIReader = c, nil
	srv := &Server{Addr: "127.0.0.1:0", CertDir: vol.dir, Handler: h, Log: logr.Discard(), Listening: func(a net.Addr) { addrs <- a }}
	go func() { done <- srv.Start(srvCtx) }()
	t.Cleanup(func() { cancel(); <-done })
	var addr net.Addr
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatal(err)
	}

	// A namespace only this webhook serves: the sample registration skips
	// namespaces labelled inject=disabled, and the pods opt in themselves.
	ns := newNamespace(t, map[string]string{inject.LabelInject: inject.ValueDisabled, "weft-test": "rotation"})
	url := "https://" + addr.String() + Path
	caPEM := func(ca *testCA) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
	}
	hook := &admregv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-rotation-test"},
		Webhooks: []admregv1.MutatingWebhook{{
			Name:                    "rotation.inject.mesh.weft.dev",
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             ptr.To(admregv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admregv1.Fail),
			TimeoutSeconds:          ptr.To[int32](10),
			ClientConfig:            admregv1.WebhookClientConfig{URL: &url, CABundle: caPEM(oldCA)},
			Rules: []admregv1.RuleWithOperations{{
				Operations: []admregv1.OperationType{admregv1.Create},
				Rule:       admregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"weft-test": "rotation"}},
		}},
	}
	if err := c.Create(ctx, hook); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Delete(context.Background(), hook) })

	pod := func() *corev1.Pod {
		p := testPod(ns, "rotated")
		p.Annotations = map[string]string{inject.AnnotationInject: inject.ValueEnabled}
		return p
	}
	// injectedSoon waits for the API server to load the registration and
	// call the webhook; it reports the last error if that never happens.
	injectedSoon := func(stage string) {
		t.Helper()
		var last error
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			p := pod()
			if last = c.Create(ctx, p, client.DryRunAll); last != nil {
				return false, nil
			}
			return p.Annotations[inject.AnnotationInjected] != "", nil
		})
		if err != nil {
			t.Fatalf("%s: pods are not injected: %v (last error: %v)", stage, err, last)
		}
	}
	injectedSoon("before rotation")

	setBundle := func(ca *testCA) {
		t.Helper()
		if err := c.Get(ctx, client.ObjectKeyFromObject(hook), hook); err != nil {
			t.Fatal(err)
		}
		hook.Webhooks[0].ClientConfig.CABundle = caPEM(ca)
		if err := c.Update(ctx, hook); err != nil {
			t.Fatal(err)
		}
	}

	crt, key = newCA.serving(t, 2)
	vol.write(t, map[string][]byte{CertFile: crt, KeyFile: key})

	// The API server keeps one client (and its open connections) per
	// registration, so a success right after the rotation could come from
	// a connection opened before it. First move it to a bundle that trusts
	// neither certificate and wait until calls fail: from then on the
	// registration in use is a new one.
	setBundle(unrelatedCA)
	var last error
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		last = c.Create(ctx, pod(), client.DryRunAll)
		return last != nil && strings.Contains(last.Error(), "x509"), nil
	}); err != nil {
		t.Fatalf("the API server accepts a certificate its bundle does not trust: %v (last: %v)", err, last)
	}
	// Now only a fresh handshake with the rotated certificate can succeed.
	setBundle(newCA)
	injectedSoon("after rotation")
}
