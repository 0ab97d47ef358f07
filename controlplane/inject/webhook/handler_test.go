package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/weftmesh/weft/controlplane/inject"
	"github.com/weftmesh/weft/internal/scheme"
)

func reviewJSON(t *testing.T, mut func(*admissionv1.AdmissionReview)) string {
	t.Helper()
	raw, err := json.Marshal(testPod("shop", "web"))
	if err != nil {
		t.Fatal(err)
	}
	rv := &admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "4b2e", Namespace: "shop", Operation: admissionv1.Create,
			Kind:     metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: podResource, Object: runtime.RawExtension{Raw: raw},
		},
	}
	if mut != nil {
		mut(rv)
	}
	b, err := json.Marshal(rv)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func fakeHandler(t *testing.T, objs ...client.Object) *Handler {
	t.Helper()
	c := fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(objs...).Build()
	return &Handler{
		Config:       inject.DefaultConfig(),
		TrustAnchors: func(context.Context) (string, error) { return suite.anchors, nil },
		Namespaces:   c,
		Log:          logr.Discard(),
	}
}

type answer struct {
	code   int
	review admissionv1.AdmissionReview
	body   string
}

func post(t *testing.T, h http.Handler, method, contentType, body string) answer {
	t.Helper()
	req := httptest.NewRequest(method, Path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	a := answer{code: rec.Code, body: rec.Body.String()}
	if strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(rec.Body.Bytes(), &a.review); err != nil {
			t.Fatalf("response is not an AdmissionReview: %v: %s", err, a.body)
		}
	}
	return a
}

func TestHandlerMalformed(t *testing.T) {
	h := fakeHandler(t)
	h.MaxBodyBytes = 64 << 10
	for _, tc := range []struct {
		name, method, contentType, body string
		wantCode                        int
		wantMsg                         string
		wantUID                         string
	}{
		{"GET", "GET", "application/json", "", http.StatusMethodNotAllowed, "only POST", ""},
		{"not JSON content", "POST", "text/plain", reviewJSON(t, nil), http.StatusUnsupportedMediaType, `content type "text/plain"`, ""},
		{"empty body", "POST", "application/json", "", http.StatusBadRequest, "empty request body", ""},
		{"truncated JSON", "POST", "application/json", `{"apiVersion":`, http.StatusBadRequest, "not an AdmissionReview", ""},
		{"JSON array", "POST", "application/json", `[1,2]`, http.StatusBadRequest, "not an AdmissionReview", ""},
		{"too large", "POST", "application/json", `{"a":"` + strings.Repeat("x", 65<<10) + `"}`, http.StatusRequestEntityTooLarge, "larger than 65536 bytes", ""},
		{"wrong kind", "POST", "application/json", reviewJSON(t, func(r *admissionv1.AdmissionReview) { r.Kind = "Pod" }),
			http.StatusBadRequest, "only admission.k8s.io/v1 AdmissionReview", "4b2e"},
		{"v1beta1", "POST", "application/json", reviewJSON(t, func(r *admissionv1.AdmissionReview) { r.APIVersion = "admission.k8s.io/v1beta1" }),
			http.StatusBadRequest, "unsupported admission.k8s.io/v1beta1", "4b2e"},
		{"no request", "POST", "application/json", reviewJSON(t, func(r *admissionv1.AdmissionReview) { r.Request = nil }),
			http.StatusBadRequest, "has no request", ""},
		{"no uid", "POST", "application/json", reviewJSON(t, func(r *admissionv1.AdmissionReview) { r.Request.UID = "" }),
			http.StatusBadRequest, "has no uid", ""},
		{"object is not a pod", "POST", "application/json", reviewJSON(t, func(r *admissionv1.AdmissionReview) {
			r.Request.Object.Raw = []byte(`{"kind":"Pod","spec":{"containers":"many"}}`)
		}), http.StatusBadRequest, "request object is not a Pod", "4b2e"},
		{"object of another kind", "POST", "application/json", reviewJSON(t, func(r *admissionv1.AdmissionReview) {
			r.Request.Object.Raw = []byte(`{"kind":"Deployment","apiVersion":"apps/v1"}`)
		}), http.StatusBadRequest, "is a Deployment, not a Pod", "4b2e"},
		{"no object", "POST", "application/json", reviewJSON(t, func(r *admissionv1.AdmissionReview) { r.Request.Object.Raw = nil }),
			http.StatusBadRequest, "not a Pod", "4b2e"},
		{"no namespace", "POST", "application/json", reviewJSON(t, func(r *admissionv1.AdmissionReview) { r.Request.Namespace = "" }),
			http.StatusBadRequest, "has no namespace", "4b2e"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := post(t, h, tc.method, tc.contentType, tc.body)
			if a.code != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", a.code, tc.wantCode, a.body)
			}
			r := a.review.Response
			if r == nil || r.Allowed || r.Result == nil || int(r.Result.Code) != tc.wantCode || !strings.Contains(r.Result.Message, tc.wantMsg) {
				t.Fatalf("response %s, want an error response with %q", a.body, tc.wantMsg)
			}
			if string(r.UID) != tc.wantUID || a.review.Kind != "AdmissionReview" || a.review.APIVersion != "admission.k8s.io/v1" {
				t.Errorf("response %s, want an AdmissionReview v1 with uid %q", a.body, tc.wantUID)
			}
		})
	}
}

func TestHandlerOtherRequests(t *testing.T) {
	h := fakeHandler(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{inject.LabelInject: inject.ValueEnabled}}})
	for _, tc := range []struct {
		name string
		mut  func(*admissionv1.AdmissionReview)
	}{
		{"update", func(r *admissionv1.AdmissionReview) { r.Request.Operation = admissionv1.Update }},
		{"deployment", func(r *admissionv1.AdmissionReview) {
			r.Request.Resource = metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
		}},
		{"subresource", func(r *admissionv1.AdmissionReview) { r.Request.SubResource = "ephemeralcontainers" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := post(t, h, "POST", "application/json", reviewJSON(t, tc.mut))
			r := a.review.Response
			if a.code != http.StatusOK || r == nil || !r.Allowed || r.Patch != nil || len(r.Warnings) != 1 {
				t.Errorf("status %d response %s; want allowed, unchanged, with a warning", a.code, a.body)
			}
		})
	}
}

// TestHandlerCannotDecide: when the server cannot decide it answers 500, a
// failed call, so that the webhook's failurePolicy applies instead of a
// denial or a silent skip.
func TestHandlerCannotDecide(t *testing.T) {
	meshed := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{inject.LabelInject: inject.ValueEnabled}}}
	for _, tc := range []struct {
		name    string
		mut     func(*Handler)
		wantMsg string
	}{
		{"namespace lookup fails", func(h *Handler) {
			h.Namespaces = fake.NewClientBuilder().WithScheme(scheme.New()).WithInterceptorFuncs(interceptor.Funcs{
				Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
					return errors.New("cache not started")
				},
			}).Build()
		}, "reading namespace shop: cache not started"},
		{"no trust bundle", func(h *Handler) {
			h.TrustAnchors = ConfigMapTrustAnchors(fake.NewClientBuilder().WithScheme(scheme.New()).Build(), "weft-system")
		}, `configmaps "weft-trust-bundle" not found`},
		{"bundle without ca.crt", func(h *Handler) {
			h.TrustAnchors = ConfigMapTrustAnchors(fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(&corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: TrustBundleConfigMap},
				Data:       map[string]string{"root.pem": suite.anchors},
			}).Build(), "weft-system")
		}, "has no ca.crt"},
		{"bundle is not PEM", func(h *Handler) {
			h.TrustAnchors = func(context.Context) (string, error) { return "not a certificate", nil }
		}, "trust anchors: trailing data that is not PEM"},
		{"no getter", func(h *Handler) { h.TrustAnchors = nil }, "no trust anchors configured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := fakeHandler(t, meshed)
			tc.mut(h)
			a := post(t, h, "POST", "application/json", reviewJSON(t, nil))
			if a.code != http.StatusInternalServerError || !strings.Contains(a.body, tc.wantMsg) {
				t.Errorf("status %d body %q, want 500 with %q", a.code, a.body, tc.wantMsg)
			}
		})
	}

	// Pods that are not to be injected do not depend on the bundle.
	h := fakeHandler(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}})
	h.TrustAnchors = nil
	if a := post(t, h, "POST", "application/json", reviewJSON(t, nil)); a.code != http.StatusOK || !a.review.Response.Allowed {
		t.Errorf("pod outside the mesh: status %d %s", a.code, a.body)
	}
}

func TestHandlerUnknownNamespace(t *testing.T) {
	h := fakeHandler(t)
	a := post(t, h, "POST", "application/json", reviewJSON(t, nil))
	if r := a.review.Response; a.code != http.StatusOK || !r.Allowed || r.Patch != nil || !strings.Contains(r.AuditAnnotations[auditSkipped], "does not match the injection selector") {
		t.Errorf("pod in an unknown namespace: %d %s", a.code, a.body)
	}
	a = post(t, h, "POST", "application/json", reviewJSON(t, func(r *admissionv1.AdmissionReview) {
		p := testPod("shop", "web")
		p.Annotations = map[string]string{inject.AnnotationInject: inject.ValueEnabled}
		r.Request.Object.Raw, _ = json.Marshal(p)
	}))
	if r := a.review.Response; a.code != http.StatusOK || !r.Allowed || r.PatchType == nil || r.AuditAnnotations[auditInjected] != "stable" {
		t.Errorf("opted-in pod in an unknown namespace: %d %s", a.code, a.body)
	}
}

// BenchmarkHandler is the in-process cost of one injection (the admission
// latency benchmark with the API server is bench/inject).
func BenchmarkHandler(b *testing.B) {
	t := &testing.T{}
	h := fakeHandler(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{inject.LabelInject: inject.ValueEnabled}}})
	body := reviewJSON(t, nil)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, Path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Body.String())
		}
	}
}

// FuzzHandler: no request body makes the handler panic or answer anything
// but an AdmissionReview with a known status.
func FuzzHandler(f *testing.F) {
	t := &testing.T{}
	h := fakeHandler(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{inject.LabelInject: inject.ValueEnabled}}})
	h.MaxBodyBytes = 1 << 20
	f.Add(reviewJSON(t, nil))
	f.Add(reviewJSON(t, func(r *admissionv1.AdmissionReview) {
		r.Request.Object.Raw = []byte(`{"spec":{"initContainers":[{"name":"weft-proxy"}]}}`)
	}))
	f.Add(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","namespace":"shop","resource":{"version":"v1","resource":"pods"},"operation":"CREATE","object":null}}`)
	f.Add("")
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, Path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
				t.Fatalf("status %d with a body that is not an AdmissionReview: %s", rec.Code, rec.Body.String())
			}
		case http.StatusInternalServerError:
			// Cannot decide (for example an invalid configuration):
			// failurePolicy applies.
		default:
			t.Fatalf("status %d", rec.Code)
		}
	})
}
