package harness

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

const svcChain = "WEFT-E2E-SERVICES"

// runKubeProxy DNATs Service ClusterIPs to their ready endpoints in the node
// namespace, like kube-proxy's iptables mode: traffic a pod sends to a
// ClusterIP without a mesh proxy (or from the proxy itself, which proxy-init
// exempts) is routed to the node and forwarded to an endpoint.
func runKubeProxy(ctx context.Context, c *Cluster) {
	for _, hook := range []string{"PREROUTING", "OUTPUT"} {
		_ = run("iptables", "-t", "nat", "-N", svcChain)
		if run("iptables", "-t", "nat", "-C", hook, "-j", svcChain) != nil {
			if err := run("iptables", "-t", "nat", "-A", hook, "-j", svcChain); err != nil {
				c.errorf("kube-proxy: %v", err)
				return
			}
		}
	}
	f := informers.NewSharedInformerFactory(c.Kube, 0)
	svcs := f.Core().V1().Services().Informer()
	slices_ := f.Discovery().V1().EndpointSlices().Informer()
	changed := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	h := cache.ResourceEventHandlerFuncs{AddFunc: poke, UpdateFunc: func(_, o any) { poke(o) }, DeleteFunc: poke}
	svcs.AddEventHandler(h)
	slices_.AddEventHandler(h)
	f.Start(ctx.Done())
	cache.WaitForCacheSync(ctx.Done(), svcs.HasSynced, slices_.HasSynced)
	last := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		time.Sleep(20 * time.Millisecond) // coalesce bursts
		rules := renderServiceRules(svcs.GetStore().List(), slices_.GetStore().List())
		if rules == last {
			continue
		}
		cmd := exec.Command("iptables-restore", "--noflush")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			c.errorf("kube-proxy: iptables-restore: %v: %s\n%s", err, out, rules)
			continue
		}
		last = rules
	}
}

func renderServiceRules(svcObjs, sliceObjs []any) string {
	byService := map[string][]*discoveryv1.EndpointSlice{}
	for _, o := range sliceObjs {
		es := o.(*discoveryv1.EndpointSlice)
		key := es.Namespace + "/" + es.Labels[discoveryv1.LabelServiceName]
		byService[key] = append(byService[key], es)
	}
	var b bytes.Buffer
	b.WriteString("*nat\n:" + svcChain + " - [0:0]\n")
	var lines []string
	svcList := make([]*corev1.Service, 0, len(svcObjs))
	for _, o := range svcObjs {
		svcList = append(svcList, o.(*corev1.Service))
	}
	// Sorted for a stable rule set; within one service port the order of
	// the probabilities matters, so lines are not sorted.
	slices.SortFunc(svcList, func(a, b *corev1.Service) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	for _, s := range svcList {
		if s.Spec.ClusterIP == "" || s.Spec.ClusterIP == corev1.ClusterIPNone {
			continue
		}
		for _, sp := range s.Spec.Ports {
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				continue
			}
			var targets []string
			for _, es := range byService[s.Namespace+"/"+s.Name] {
				if es.AddressType != discoveryv1.AddressTypeIPv4 {
					continue
				}
				var port int32
				for _, p := range es.Ports {
					if p.Name != nil && *p.Name == sp.Name && p.Port != nil {
						port = *p.Port
					}
				}
				if port == 0 {
					continue
				}
				for _, e := range es.Endpoints {
					if e.Conditions.Ready != nil && !*e.Conditions.Ready {
						continue
					}
					for _, a := range e.Addresses {
						targets = append(targets, fmt.Sprintf("%s:%d", a, port))
					}
				}
			}
			slices.Sort(targets)
			match := fmt.Sprintf("-A %s -d %s/32 -p tcp -m tcp --dport %d", svcChain, s.Spec.ClusterIP, sp.Port)
			if len(targets) == 0 {
				continue // like kube-proxy without endpoints: nothing answers
			}
			for i, t := range targets {
				rest := len(targets) - i
				if rest > 1 {
					lines = append(lines, fmt.Sprintf("%s -m statistic --mode random --probability %.5f -j DNAT --to-destination %s", match, 1/float64(rest), t))
				} else {
					lines = append(lines, match+" -j DNAT --to-destination "+t)
				}
			}
		}
	}
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}
