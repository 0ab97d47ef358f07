package harness

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// TestPlainCluster checks the harness itself, without the mesh: a
// Deployment becomes pods (ReplicaSet controller, our kubelet), the pods
// get EndpointSlices, and a ClusterIP reaches them from the node and by
// name from another pod.
func TestPlainCluster(t *testing.T) {
	c := Start(t)
	c.Namespace(t, "plain", nil, "web", "client")
	dep, svc := App("plain", "web", 2, nil)
	cdep, _ := App("plain", "client", 1, nil)
	c.Create(t, dep, svc, cdep)
	c.WaitReady(t, "plain", "web", 60*time.Second)
	c.WaitReady(t, "plain", "client", 60*time.Second)

	Eventually(t, 30*time.Second, "endpoints of web", func() (bool, error) {
		var l discoveryv1.EndpointSliceList
		if err := c.Client.List(context.Background(), &l, client.InNamespace("plain"), client.MatchingLabels{discoveryv1.LabelServiceName: "web"}); err != nil {
			return false, err
		}
		n := 0
		for _, s := range l.Items {
			n += len(s.Endpoints)
		}
		return n == 2, nil
	})
	if err := c.Client.Get(context.Background(), client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	// From the node, through the ClusterIP: both pods answer.
	seen := map[string]bool{}
	// A new connection each time: conntrack keeps one connection on one
	// endpoint.
	noKeepAlive := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	Eventually(t, 30*time.Second, "both web pods answer on the ClusterIP", func() (bool, error) {
		res, err := noKeepAlive.Get("http://" + svc.Spec.ClusterIP + "/hello")
		if err != nil {
			return false, err
		}
		var body struct{ Pod string }
		err = json.NewDecoder(res.Body).Decode(&body)
		res.Body.Close()
		seen[body.Pod] = true
		return len(seen) == 2, err
	})
	// From the client pod, by Service name.
	clientPod := c.Pods(t, "plain", map[string]string{"app": "client"})[0]
	Eventually(t, 30*time.Second, "client pod reaches web by name", func() (bool, error) {
		out, err := c.Exec("plain", clientPod.Name, "curl", "-sS", "--max-time", "5", "http://web.plain.svc.cluster.local/from-client")
		return err == nil && strings.Contains(out, `"path":"/from-client"`), err
	})

	// Scaling down removes a pod, its network and its endpoint.
	web := c.Pods(t, "plain", map[string]string{"app": "web"})
	if err := c.Client.Delete(context.Background(), &web[0]); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 30*time.Second, "deleted pod gone", func() (bool, error) {
		var p corev1.Pod
		err := c.Client.Get(context.Background(), client.ObjectKeyFromObject(&web[0]), &p)
		return err != nil, nil
	})
	c.WaitReady(t, "plain", "web", 60*time.Second)
}

func TestAsUserInAUserNamespaceMappingOnlyRoot(t *testing.T) {
	onlyRoot := func(uid int) bool { return uid == 0 }
	all := func(int) bool { return true }
	initArgs := []string{"init", "--inbound-port=4143", "--proxy-uid=2102"}
	env := []string{"PATH=/bin"}

	uid, args, gotEnv := asUser(onlyRoot, "/x/weft-proxy", 0, initArgs, env)
	if uid != 0 || strings.Join(args, " ") != "init --inbound-port=4143 --proxy-uid=0 --proxy-mark=0x2102" || len(gotEnv) != 1 {
		t.Errorf("proxy-init: uid %d, args %q, env %q; want the UID rule replaced by a mark", uid, args, gotEnv)
	}
	uid, args, gotEnv = asUser(onlyRoot, "/x/weft-proxy", 2102, nil, env)
	if uid != 0 || len(args) != 0 || strings.Join(gotEnv, " ") != "PATH=/bin WEFT_SOCKET_MARK=0x2102" {
		t.Errorf("proxy: uid %d, args %q, env %q; want root with the socket mark", uid, args, gotEnv)
	}
	if uid, _, gotEnv = asUser(onlyRoot, "/x/e2e-app", 1000, nil, env); uid != 0 || len(gotEnv) != 1 {
		t.Errorf("app: uid %d, env %q; want root and no mark", uid, gotEnv)
	}
	// With every UID mapped (root, CI) nothing changes.
	uid, args, gotEnv = asUser(all, "/x/weft-proxy", 0, initArgs, env)
	if uid != 0 || strings.Join(args, " ") != strings.Join(initArgs, " ") || len(gotEnv) != 1 {
		t.Errorf("proxy-init with root: uid %d, args %q, env %q; want them unchanged", uid, args, gotEnv)
	}
	if uid, _, gotEnv = asUser(all, "/x/weft-proxy", 2102, nil, env); uid != 2102 || len(gotEnv) != 1 {
		t.Errorf("proxy with root: uid %d, env %q; want its own UID and no mark", uid, gotEnv)
	}
}
