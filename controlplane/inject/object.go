package inject

import (
	"encoding/json"
	"fmt"

	jsonpatch "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
)

// InjectObject returns an injected copy of pod, for offline injection of
// manifests (weftctl inject). It applies the patch that Inject returns, the
// one the webhook sends, so the two paths cannot drift apart.
func InjectObject(pod *corev1.Pod, cfg Config) (*corev1.Pod, error) {
	p, err := Inject(pod, cfg)
	if err != nil {
		return nil, err
	}
	return applyPatch(pod, p)
}

func applyPatch(pod *corev1.Pod, p Patch) (*corev1.Pod, error) {
	doc, err := json.Marshal(pod)
	if err != nil {
		return nil, fmt.Errorf("encoding pod: %w", err)
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encoding patch: %w", err)
	}
	decoded, err := jsonpatch.DecodePatch(raw)
	if err != nil {
		return nil, fmt.Errorf("decoding patch: %w", err)
	}
	patched, err := decoded.Apply(doc)
	if err != nil {
		return nil, fmt.Errorf("applying patch: %w", err)
	}
	out := &corev1.Pod{}
	if err := json.Unmarshal(patched, out); err != nil {
		return nil, fmt.Errorf("decoding patched pod: %w", err)
	}
	return out, nil
}
