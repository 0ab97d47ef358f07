// Package webhook serves the sidecar injector as a Kubernetes mutating
// admission webhook: an http.Handler for AdmissionReview v1 at /inject that
// decides with inject.Injectable (reading the pod's namespace through a
// cached client), patches with inject.Inject, and says why a pod that asked
// for the mesh was left out; a TLS server whose certificate is read from a
// directory (tls.crt, tls.key) and reloaded when cert-manager or the operator
// rotates it; and the getter of the trust anchors the injected proxies need.
//
// It owns no decision of its own about pods: that stays in package inject,
// pure and shared with offline injection. It must not write to the API
// server (the webhook is registered with sideEffects: None).
//
// # Answers
//
//   - Injected: allowed, with the JSON patch.
//   - Already injected (the API server may call a webhook twice for one pod):
//     allowed, unchanged.
//   - Not asked for (no namespace label, no pod annotation): allowed,
//     unchanged; only an audit annotation records why.
//   - Asked for but left out (opt-out annotation, host network, ...):
//     allowed, with the annotation mesh.weft.dev/inject-skipped carrying the
//     reasons, and a warning for kubectl unless the pod opted out itself.
//   - Asked for but refused because of the pod's own spec (a container runs
//     as the proxy's UID, an invalid annotation): denied with the reason, so
//     that the user sees it rather than a pod that silently bypasses the
//     mesh.
//   - No Event is recorded for a pod left out or refused: the webhook is
//     registered with sideEffects: None (so dry-run creates may call it),
//     and at admission the pod has no UID to attach an Event to. The
//     warning, the annotation, the audit annotations and the log carry the
//     reason instead.
//   - A malformed request: HTTP 400 with an AdmissionReview error response.
//   - The server cannot decide (namespace lookup failed, trust bundle
//     missing or invalid): HTTP 500, which the API server treats as a failed
//     call, so the webhook's failurePolicy decides.
//
// # failurePolicy
//
// We recommend Ignore, the MeshControlPlane's default, which the operator
// renders into its webhook configuration. With Fail, a control plane that
// is down or unreachable stops every pod creation in every meshed namespace: no scale-up, no replacement
// of pods lost with a node, no rollout, which turns a control-plane outage
// into an application outage, the opposite of the mesh's promise that the
// data plane keeps working without its control plane. With Ignore, a pod
// admitted during an outage starts without the proxy; it is not a security
// hole, because it has no identity and strictly meshed peers refuse it, and
// the missed-pods controller reports it (and can restart its owner) once the
// control plane is back. The webhook's namespaceSelector keeps kube-system
// and the mesh's namespace out either way. A cluster that must never run an
// unmeshed pod in a meshed namespace (Permissive mode plus a compliance
// rule) can choose Fail, and should then run the control plane with several
// replicas and a PodDisruptionBudget.
package webhook
