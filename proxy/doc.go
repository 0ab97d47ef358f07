// Package proxy is the root of weft-proxy, the Weft data plane. Its
// subpackages hold the sidecar (sidecar), identity and mTLS (identity),
// upstream connections (upstream), protocol detection (detect), opaque TCP
// (pipe), SO_ORIGINAL_DST (origdst), metrics, routing (route) and traffic
// redirection (iptables). Nothing under proxy/ may import k8s.io: the sidecar
// runs in every pod and must stay small; TestNoKubernetesImports enforces it.
package proxy
