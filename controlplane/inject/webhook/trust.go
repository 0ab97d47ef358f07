package webhook

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The trust bundle the control plane publishes in its namespace.
const (
	TrustBundleConfigMap = "weft-trust-bundle"
	TrustBundleKey       = "ca.crt"
)

// ConfigMapTrustAnchors returns a Handler.TrustAnchors that reads the trust
// anchors from ConfigMap weft-trust-bundle, key ca.crt, in namespace (the
// mesh's). Read through a cached client it costs no API call, and a rotated
// bundle is used for the next pod without a restart.
func ConfigMapTrustAnchors(r client.Reader, namespace string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		cm := &corev1.ConfigMap{}
		if err := r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: TrustBundleConfigMap}, cm); err != nil {
			return "", fmt.Errorf("ConfigMap %s/%s: %w", namespace, TrustBundleConfigMap, err)
		}
		pem := cm.Data[TrustBundleKey]
		if pem == "" {
			return "", fmt.Errorf("ConfigMap %s/%s has no %s", namespace, TrustBundleConfigMap, TrustBundleKey)
		}
		return pem, nil
	}
}
