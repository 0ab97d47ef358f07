package harness

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// apiTokenPath is where in-cluster clients find their token.
const apiTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount"

func (c *Cluster) apiPort() string {
	u, err := url.Parse(c.Config.Host)
	if err != nil {
		return ""
	}
	return u.Port()
}

// hasAPIToken says whether a container of the pod mounts the API token
// volume (the ServiceAccount admission plugin adds it).
func (r *podRun) hasAPIToken() bool {
	for _, c := range append(append([]corev1.Container{}, r.pod.Spec.InitContainers...), r.pod.Spec.Containers...) {
		for _, m := range c.VolumeMounts {
			if m.MountPath == apiTokenPath {
				return true
			}
		}
	}
	return false
}

// syncVolumes writes every volume's files under the pod directory: Secrets,
// ConfigMaps, projected volumes (ServiceAccount tokens from TokenRequest,
// the root CA, the downward API namespace) and emptyDirs. Later calls
// refresh Secret and ConfigMap contents (rotation) and tokens near expiry,
// by atomic renames so that readers never see a half-written file.
func (r *podRun) syncVolumes(first bool) error {
	ctx := context.Background()
	ns := r.pod.Namespace
	for _, v := range r.pod.Spec.Volumes {
		dir := filepath.Join(r.dir, "volumes", v.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		files := map[string][]byte{}
		switch {
		case v.EmptyDir != nil:
			if err := os.Chmod(dir, 0o777); err != nil {
				return err
			}
			continue
		case v.Secret != nil:
			s, err := r.k.c.Kube.CoreV1().Secrets(ns).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				if v.Secret.Optional != nil && *v.Secret.Optional {
					continue
				}
				return fmt.Errorf("secret %s: %w", v.Secret.SecretName, err)
			}
			for k, b := range s.Data {
				files[itemPath(v.Secret.Items, k)] = b
			}
		case v.ConfigMap != nil:
			cm, err := r.k.c.Kube.CoreV1().ConfigMaps(ns).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				if v.ConfigMap.Optional != nil && *v.ConfigMap.Optional {
					continue
				}
				return fmt.Errorf("configmap %s: %w", v.ConfigMap.Name, err)
			}
			for k, s := range cm.Data {
				files[itemPath(v.ConfigMap.Items, k)] = []byte(s)
			}
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				switch {
				case src.ServiceAccountToken != nil:
					p := filepath.Join(dir, src.ServiceAccountToken.Path)
					// Tokens are refreshed every ten minutes, well before
					// the ten-minute minimum lifetime runs out.
					if fi, err := os.Stat(p); err == nil && time.Since(fi.ModTime()) < 10*time.Minute && !first {
						continue
					}
					tok, err := r.tokenFor(src.ServiceAccountToken.Audience, src.ServiceAccountToken.ExpirationSeconds)
					if err != nil {
						return fmt.Errorf("token: %w", err)
					}
					files[src.ServiceAccountToken.Path] = []byte(tok)
				case src.ConfigMap != nil:
					cm, err := r.k.c.Kube.CoreV1().ConfigMaps(ns).Get(ctx, src.ConfigMap.Name, metav1.GetOptions{})
					if err != nil {
						if first && src.ConfigMap.Name == "kube-root-ca.crt" {
							// The publisher may not have run yet.
							files["ca.crt"], _ = os.ReadFile(r.k.c.caFile)
							continue
						}
						if src.ConfigMap.Optional != nil && *src.ConfigMap.Optional {
							continue
						}
						return fmt.Errorf("configmap %s: %w", src.ConfigMap.Name, err)
					}
					for k, s := range cm.Data {
						files[itemPath(src.ConfigMap.Items, k)] = []byte(s)
					}
				case src.Secret != nil:
					s, err := r.k.c.Kube.CoreV1().Secrets(ns).Get(ctx, src.Secret.Name, metav1.GetOptions{})
					if err != nil {
						return fmt.Errorf("secret %s: %w", src.Secret.Name, err)
					}
					for k, b := range s.Data {
						files[itemPath(src.Secret.Items, k)] = b
					}
				case src.DownwardAPI != nil:
					for _, it := range src.DownwardAPI.Items {
						if it.FieldRef != nil && it.FieldRef.FieldPath == "metadata.namespace" {
							files[it.Path] = []byte(ns)
						}
					}
				}
			}
		case v.DownwardAPI != nil:
			for _, it := range v.DownwardAPI.Items {
				if it.FieldRef != nil && it.FieldRef.FieldPath == "metadata.namespace" {
					files[it.Path] = []byte(ns)
				}
			}
		default:
			return fmt.Errorf("volume %s: only emptyDir, secret, configMap, projected and downwardAPI volumes are supported", v.Name)
		}
		for name, b := range files {
			if err := writeAtomic(filepath.Join(dir, name), b); err != nil {
				return err
			}
		}
	}
	if err := r.writeHosts(); err != nil {
		return err
	}
	if r.hasAPIToken() {
		return r.writeKubeconfig()
	}
	return nil
}

func (r *podRun) refreshVolumes() {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		if err := r.syncVolumes(false); err != nil {
			r.logf("refreshing volumes: %v", err)
		}
	}
}

func itemPath(items []corev1.KeyToPath, key string) string {
	for _, it := range items {
		if it.Key == key {
			return it.Path
		}
	}
	return key
}

func writeAtomic(path string, b []byte) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == string(b) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// writeHosts gives the pod the names cluster DNS would: every Service as
// name.namespace.svc.cluster.local, name.namespace.svc, name.namespace and,
// in its own namespace, name. The file is rewritten in place, not renamed:
// it is bind-mounted onto /etc/hosts.
func (r *podRun) writeHosts() error {
	svcs, err := r.k.c.services()
	if err != nil {
		return err
	}
	lines := []string{"127.0.0.1 localhost", r.ip + " " + r.pod.Name}
	for _, s := range svcs {
		if s.Spec.ClusterIP == "" || s.Spec.ClusterIP == corev1.ClusterIPNone {
			continue
		}
		names := []string{s.Name + "." + s.Namespace + ".svc.cluster.local", s.Name + "." + s.Namespace + ".svc", s.Name + "." + s.Namespace}
		if s.Namespace == r.pod.Namespace {
			names = append(names, s.Name)
		}
		lines = append(lines, s.Spec.ClusterIP+" "+strings.Join(names, " "))
	}
	sort.Strings(lines[2:])
	content := strings.Join(lines, "\n") + "\n"
	p := filepath.Join(r.dir, "hosts")
	if old, err := os.ReadFile(p); err == nil && string(old) == content {
		return nil
	}
	return os.WriteFile(p, []byte(content), 0o644)
}

// writeKubeconfig points in-cluster clients at the API server on the node
// address with the pod's own ServiceAccount token (re-read from its file).
func (r *podRun) writeKubeconfig() error {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://%s:%s
    certificate-authority: %s
contexts:
- name: local
  context: {cluster: local, user: pod}
current-context: local
users:
- name: pod
  user:
    tokenFile: %s/token
`, NodeIP, r.k.c.apiPort(), r.k.c.caFile, apiTokenPath)
	return writeAtomic(filepath.Join(r.dir, "kubeconfig"), []byte(kc))
}

// services lists the cluster's Services for the pods' /etc/hosts, at most
// once a second however many pods refresh their volumes.
func (c *Cluster) services() ([]corev1.Service, error) {
	c.svcMu.Lock()
	defer c.svcMu.Unlock()
	if time.Since(c.svcAt) < time.Second {
		return c.svcList, nil
	}
	l, err := c.Kube.CoreV1().Services("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	c.svcList, c.svcAt = l.Items, time.Now()
	return c.svcList, nil
}
