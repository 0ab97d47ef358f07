package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
)

// admission is the bench's stand-in for two things a kwok cluster lacks:
//
//   - the scheduler: a pod without spec.nodeName is bound, at creation, to
//     one of the fake nodes (round robin);
//   - the injector: a bench application pod gets the revision label (and a
//     weft-proxy container) of the revision the operator's webhook
//     configuration points at when the pod is created, as the real injector
//     of that revision would. The real injector cannot run here: the
//     operator's webhook is a Service whose endpoints would be the fake pod
//     IPs kwok hands out. Application pods carry mesh.weft.dev/inject=disabled
//     so that the operator's webhook configuration skips them (its
//     objectSelector); the operator itself ignores that pod label.
//
// It is served on loopback and registered with a URL webhook configuration.
type admission struct {
	nodes    []string
	next     atomic.Uint64
	revision atomic.Pointer[string]

	mu         sync.Mutex
	byRevision map[string]int
	bound      int
}

const (
	admissionName = "weft-bench-admission"
	benchLabel    = "bench.weft.dev/app"
)

func newAdmission(nodes []string) *admission {
	a := &admission{nodes: nodes, byRevision: map[string]int{}}
	empty := ""
	a.revision.Store(&empty)
	return a
}

func (a *admission) setRevision(rev string) { a.revision.Store(&rev) }

func (a *admission) counts() (map[string]int, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]int{}
	for k, v := range a.byRevision {
		out[k] = v
	}
	return out, a.bound
}

type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

func (a *admission) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, "bad admission review", http.StatusBadRequest)
		return
	}
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	var pod corev1.Pod
	if err := json.Unmarshal(review.Request.Object.Raw, &pod); err == nil {
		if ops := a.mutate(&pod); len(ops) > 0 {
			patch, _ := json.Marshal(ops)
			resp.Patch = patch
			resp.PatchType = ptr.To(admissionv1.PatchTypeJSONPatch)
		}
	}
	review.Response = resp
	review.Request = nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&review)
}

func (a *admission) mutate(pod *corev1.Pod) []jsonPatchOp {
	var ops []jsonPatchOp
	if pod.Spec.NodeName == "" && len(a.nodes) > 0 {
		n := a.nodes[int(a.next.Add(1)-1)%len(a.nodes)]
		ops = append(ops, jsonPatchOp{Op: "add", Path: "/spec/nodeName", Value: n})
		a.mu.Lock()
		a.bound++
		a.mu.Unlock()
	}
	rev := *a.revision.Load()
	if pod.Labels[benchLabel] != "" && rev != "" {
		if pod.Labels == nil {
			ops = append(ops, jsonPatchOp{Op: "add", Path: "/metadata/labels", Value: map[string]string{}})
		}
		ops = append(ops,
			jsonPatchOp{Op: "add", Path: "/metadata/labels/" + escapeJSONPointer(meshv1alpha1.LabelRevision), Value: rev},
			jsonPatchOp{Op: "add", Path: "/spec/containers/-", Value: corev1.Container{Name: "weft-proxy", Image: "ghcr.io/weftmesh/weft-proxy:" + rev}},
		)
		a.mu.Lock()
		a.byRevision[rev]++
		a.mu.Unlock()
	}
	return ops
}

func escapeJSONPointer(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '~':
			out = append(out, '~', '0')
		case '/':
			out = append(out, '~', '1')
		default:
			out = append(out, s[i])
		}
	}
	return string(out)
}

// serve starts the HTTPS server on loopback and returns its address and the
// CA bundle the API server must trust.
func (a *admission) serve(ctx context.Context) (addr string, caPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: admissionName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{
		Handler:           a,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12},
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return ln.Addr().String(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// webhookConfiguration registers the stand-in for every pod creation.
func webhookConfiguration(addr string, caPEM []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	fail := admissionregistrationv1.Fail
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: admissionName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         "pods.bench.weft.dev",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: ptr.To(fmt.Sprintf("https://%s/admit", addr)), CABundle: caPEM},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{
					APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
					Scope: ptr.To(admissionregistrationv1.NamespacedScope),
				},
			}},
			FailurePolicy:           &fail,
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          ptr.To[int32](10),
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
}
