// Package inject owns the sidecar injector's decisions and mutations: whether
// a pod joins the mesh (Injectable) and the RFC 6902 JSON patch that adds the
// proxy-init container, the weft-proxy native sidecar (with the mesh's trust
// anchors and the application's original probes in its environment), its
// ServiceAccount token volume and the injection markers, and that points the
// application's probes at the proxy's admin port (Inject, and InjectObject
// for offline injection of manifests through the very same patch).
//
// Everything here is a pure function of its arguments: no client, no API
// server, no clock. The admission webhook server is in the webhook
// subpackage; the controller that finds pods created while the webhook was
// down lives elsewhere. This package must not import the project's api/
// package: the MeshControlPlane spec is mapped onto Config by the caller.
package inject
