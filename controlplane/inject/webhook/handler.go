package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/controlplane/inject"
)

// Path is where the injector is served; the MutatingWebhookConfiguration's
// clientConfig.service.path.
const Path = "/inject"

// DefaultMaxBodyBytes bounds a request body. The API server caps a stored
// object at about 1.5 MiB, and a CREATE review carries it once.
const DefaultMaxBodyBytes = 4 << 20

// Keys of the audit annotations; the API server prefixes them with the
// webhook's name.
const (
	auditInjected = "injected"
	auditSkipped  = "skipped"
)

// Handler answers AdmissionReview v1 requests for Pod CREATE.
type Handler struct {
	// Config is the mesh's injector configuration; TrustAnchorsPEM is
	// ignored and filled from TrustAnchors for every injection.
	Config inject.Config
	// TrustAnchors returns the mesh's current trust anchors (PEM); see
	// ConfigMapTrustAnchors. Without them a proxy could not verify the
	// control plane, so no pod is injected without them.
	TrustAnchors func(context.Context) (string, error)
	// Namespaces reads the pod's namespace, normally through the
	// controller-runtime cache (admission must not cost an API call).
	Namespaces client.Reader
	// APIReader, when set, is asked when the cache does not know the
	// namespace yet (created an instant before its first pod).
	APIReader client.Reader
	// MaxBodyBytes bounds the request body (DefaultMaxBodyBytes when 0).
	MaxBodyBytes int64
	Log          logr.Logger
}

// requestError is a malformed request: HTTP 400.
type requestError struct{ msg string }

func (e requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return requestError{fmt.Sprintf(format, args...)}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.writeError(w, http.StatusMethodNotAllowed, "", "the injector accepts only POST")
		return
	}
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		h.writeError(w, http.StatusUnsupportedMediaType, "", fmt.Sprintf("content type %q is not application/json", r.Header.Get("Content-Type")))
		return
	}
	limit := h.MaxBodyBytes
	if limit <= 0 {
		limit = DefaultMaxBodyBytes
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.writeError(w, http.StatusRequestEntityTooLarge, "", fmt.Sprintf("request body is larger than %d bytes", limit))
			return
		}
		h.writeError(w, http.StatusBadRequest, "", "reading the request body: "+err.Error())
		return
	}
	review, err := decodeReview(body)
	if err != nil {
		uid := ""
		if review != nil && review.Request != nil {
			uid = string(review.Request.UID)
		}
		h.writeError(w, http.StatusBadRequest, uid, err.Error())
		return
	}
	resp, err := h.admit(r.Context(), review.Request)
	var reqErr requestError
	switch {
	case errors.As(err, &reqErr):
		h.writeError(w, http.StatusBadRequest, string(review.Request.UID), err.Error())
		return
	case err != nil:
		// Not the pod's fault: let the webhook's failurePolicy decide.
		h.Log.Error(err, "Cannot decide on pod admission", "namespace", review.Request.Namespace, "uid", review.Request.UID)
		http.Error(w, "weft injector: "+err.Error(), http.StatusInternalServerError)
		return
	}
	resp.UID = review.Request.UID
	writeReview(w, http.StatusOK, resp)
}

// decodeReview parses and checks an AdmissionReview v1 with a request.
func decodeReview(body []byte) (*admissionv1.AdmissionReview, error) {
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil, badRequest("empty request body: expected an AdmissionReview")
	}
	review := &admissionv1.AdmissionReview{}
	if err := json.Unmarshal(body, review); err != nil {
		return nil, badRequest("request body is not an AdmissionReview: %v", err)
	}
	if gv, kind := review.APIVersion, review.Kind; gv != admissionv1.SchemeGroupVersion.String() || kind != "AdmissionReview" {
		return review, badRequest("unsupported %s %s: only admission.k8s.io/v1 AdmissionReview is served (set admissionReviewVersions: [v1])", gv, kind)
	}
	if review.Request == nil {
		return review, badRequest("AdmissionReview has no request")
	}
	if review.Request.UID == "" {
		return review, badRequest("AdmissionReview request has no uid")
	}
	return review, nil
}

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// admit decides on one request. A requestError means a malformed request;
// any other error means the server could not decide.
func (h *Handler) admit(ctx context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, error) {
	log := h.Log.WithValues("namespace", req.Namespace, "uid", req.UID)
	if req.Resource != podResource || req.SubResource != "" || req.Operation != admissionv1.Create {
		// A registration mistake must not block other objects: let them
		// through, loudly.
		log.Error(nil, "Admission request the injector does not handle; check the webhook's rules",
			"resource", req.Resource, "subResource", req.SubResource, "operation", req.Operation)
		return &admissionv1.AdmissionResponse{Allowed: true, Warnings: []string{
			fmt.Sprintf("mesh.weft.dev injector ignored %s %s: it only handles pod creation", req.Operation, req.Resource.Resource),
		}}, nil
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(req.Object.Raw, pod); err != nil {
		return nil, badRequest("request object is not a Pod: %v", err)
	}
	if pod.Kind != "" && pod.Kind != "Pod" {
		return nil, badRequest("request object is a %s, not a Pod", pod.Kind)
	}
	podName := pod.Name
	if podName == "" {
		podName = pod.GenerateName + "*"
	}
	log = log.WithValues("pod", podName)

	ns, err := h.namespace(ctx, req.Namespace)
	if err != nil {
		return nil, err
	}
	cfg := h.Config
	ok, reasons := inject.Injectable(pod, ns, cfg)
	why := strings.Join(reasons, "; ")
	if !ok {
		return h.skip(log, pod, ns, why), nil
	}

	anchors, err := h.trustAnchors(ctx)
	if err != nil {
		return nil, err
	}
	cfg.TrustAnchorsPEM = anchors
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	patch, err := inject.Inject(pod, cfg)
	if err != nil {
		log.Info("Refused pod that asked for the mesh", "reason", err.Error())
		return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
			Status: metav1.StatusFailure, Code: http.StatusUnprocessableEntity, Reason: metav1.StatusReasonInvalid,
			Message: "mesh.weft.dev injector: " + err.Error(),
		}}, nil
	}
	raw, err := json.Marshal(patch)
	if err != nil {
		return nil, fmt.Errorf("encoding the patch: %w", err)
	}
	log.V(1).Info("Injected pod", "reason", why, "revision", cfg.Revision)
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{
		Allowed:          true,
		Patch:            raw,
		PatchType:        &pt,
		AuditAnnotations: map[string]string{auditInjected: cfg.Revision},
	}, nil
}

// skip answers for a pod that is not injected.
func (h *Handler) skip(log logr.Logger, pod *corev1.Pod, ns *corev1.Namespace, why string) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{Allowed: true, AuditAnnotations: map[string]string{auditSkipped: why}}
	if inject.Injected(pod) {
		log.V(1).Info("Pod is already injected", "reason", why)
		return resp
	}
	// Any value of the pod annotation counts: a typo such as "true" deserves
	// to be told.
	_, annotated := pod.Annotations[inject.AnnotationInject]
	asked := annotated || (ns != nil && ns.Labels[inject.LabelInject] == inject.ValueEnabled)
	if !asked {
		return resp
	}
	// The pod asked for the mesh: record why it runs without it, on the pod
	// itself, where kubectl and the missed-pods controller see it.
	raw, err := json.Marshal(annotatePatch(pod, inject.AnnotationInjectSkipped, why))
	if err == nil {
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = raw, &pt
	}
	if pod.Annotations[inject.AnnotationInject] != inject.ValueDisabled {
		resp.Warnings = []string{"mesh.weft.dev: pod not injected: " + why}
	}
	log.Info("Pod asked for the mesh but is not injected", "reason", why)
	return resp
}

func annotatePatch(pod *corev1.Pod, key, value string) inject.Patch {
	if len(pod.Annotations) == 0 {
		return inject.Patch{{Op: "add", Path: "/metadata/annotations", Value: map[string]string{key: value}}}
	}
	esc := strings.NewReplacer("~", "~0", "/", "~1").Replace(key)
	return inject.Patch{{Op: "add", Path: "/metadata/annotations/" + esc, Value: value}}
}

// namespace reads the pod's namespace; nil when it does not exist (then only
// the pod's own annotation can opt it in).
func (h *Handler) namespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	if name == "" {
		return nil, badRequest("AdmissionReview request has no namespace")
	}
	ns := &corev1.Namespace{}
	err := h.Namespaces.Get(ctx, client.ObjectKey{Name: name}, ns)
	if apierrors.IsNotFound(err) && h.APIReader != nil {
		err = h.APIReader.Get(ctx, client.ObjectKey{Name: name}, ns)
	}
	switch {
	case err == nil:
		return ns, nil
	case apierrors.IsNotFound(err):
		return nil, nil
	default:
		return nil, fmt.Errorf("reading namespace %s: %w", name, err)
	}
}

func (h *Handler) trustAnchors(ctx context.Context) (string, error) {
	if h.TrustAnchors == nil {
		return "", errors.New("no trust anchors configured")
	}
	pem, err := h.TrustAnchors(ctx)
	if err != nil {
		return "", fmt.Errorf("reading the trust anchors: %w", err)
	}
	if strings.TrimSpace(pem) == "" {
		return "", errors.New("the trust anchors are empty")
	}
	return pem, nil
}

func (h *Handler) writeError(w http.ResponseWriter, code int, uid, msg string) {
	h.Log.Info("Rejected malformed admission request", "status", code, "error", msg)
	writeReview(w, code, &admissionv1.AdmissionResponse{
		UID:     types.UID(uid),
		Allowed: false,
		Result:  &metav1.Status{Status: metav1.StatusFailure, Code: int32(code), Message: "mesh.weft.dev injector: " + msg},
	})
}

func writeReview(w http.ResponseWriter, code int, resp *admissionv1.AdmissionResponse) {
	out := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
		Response: resp,
	}
	b, err := json.Marshal(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(b)
}
