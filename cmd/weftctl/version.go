package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/version"
)

func clientVersion() string { return version.String() }

// runVersion prints the versions of every part: the client, the operator
// (its Deployment's image), each control-plane revision and the proxies.
func runVersion(ctx context.Context, c *cluster, out io.Writer) error {
	fmt.Fprintf(out, "client:        %s\n", clientVersion())
	var deps appsv1.DeploymentList
	err := c.client.List(ctx, &deps, client.MatchingLabels{"app.kubernetes.io/name": "weft", "app.kubernetes.io/component": "operator"})
	switch {
	case err != nil:
		fmt.Fprintf(out, "operator:      unknown (%v)\n", err)
	case len(deps.Items) == 0:
		fmt.Fprintf(out, "operator:      not installed\n")
	default:
		for _, d := range deps.Items {
			fmt.Fprintf(out, "operator:      %s (%s/%s)\n", imageTag(d.Spec.Template.Spec.Containers), d.Namespace, d.Name)
		}
	}
	var meshes meshv1alpha1.MeshControlPlaneList
	if err := c.client.List(ctx, &meshes); err != nil {
		return fmt.Errorf("listing MeshControlPlanes: %w", err)
	}
	if len(meshes.Items) == 0 {
		fmt.Fprintf(out, "control plane: none (no MeshControlPlane)\n")
		return nil
	}
	for _, m := range meshes.Items {
		fmt.Fprintf(out, "mesh %s:     desired %s, running %s\n", m.Name, m.Spec.Version, orDash(m.Status.Version.Current))
		for _, r := range m.Status.Revisions {
			ready := "not ready"
			if r.Ready {
				ready = "ready"
			}
			fmt.Fprintf(out, "  control plane %s: %s, %s, %d proxies\n", r.Name, r.Version, ready, r.Proxies)
		}
		for _, v := range m.Status.Proxies.ByVersion {
			fmt.Fprintf(out, "  proxies %s: %d\n", v.Version, v.Count)
		}
	}
	return nil
}

func imageTag(cs []corev1.Container) string {
	for _, c := range cs {
		if c.Name == "manager" {
			if i := strings.LastIndex(c.Image, ":"); i >= 0 && !strings.Contains(c.Image[i:], "/") {
				return c.Image[i+1:]
			}
			return c.Image
		}
	}
	return "unknown"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
