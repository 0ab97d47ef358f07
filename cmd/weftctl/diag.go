package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/controlplane/inject"
)

// runDiag shows what a proxy holds, read from its admin port through the API
// server's pod proxy (no port-forward, no direct network path needed): the
// identity it serves with and its current configuration snapshot.
func runDiag(ctx context.Context, c *cluster, ns, name string, adminPort int, out io.Writer) error {
	pod, err := c.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("pod %s/%s not found", ns, name)
		}
		return err
	}
	if !hasProxy(pod) {
		return fmt.Errorf("pod %s/%s has no %s container: it is not meshed (is its namespace labelled %s=%s?)",
			ns, name, inject.ProxyContainerName, inject.LabelInject, inject.ValueEnabled)
	}
	if pod.Status.PodIP == "" {
		return fmt.Errorf("pod %s/%s has no IP yet (phase %s)", ns, name, pod.Status.Phase)
	}
	fmt.Fprintf(out, "Pod %s/%s (%s), revision %q, service account %q\n", ns, name, pod.Status.PodIP,
		pod.Labels[inject.LabelRevision], pod.Spec.ServiceAccountName)
	for _, section := range []struct{ title, path string }{
		{"Identity", "/identity"},
		{"Configuration snapshot", "/config"},
	} {
		body, err := c.kube.CoreV1().Pods(ns).ProxyGet("http", name, strconv.Itoa(adminPort), section.path, nil).DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("reading %s from the proxy's admin port %d: %w", section.path, adminPort, err)
		}
		fmt.Fprintf(out, "\n== %s ==\n%s\n", section.title, indentJSON(body))
	}
	return nil
}

func hasProxy(pod *corev1.Pod) bool {
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if c.Name == inject.ProxyContainerName {
			return true
		}
	}
	return false
}

// indentJSON pretty-prints JSON and leaves anything else as it is.
func indentJSON(b []byte) string {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return string(b)
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return string(b)
	}
	return string(out)
}
