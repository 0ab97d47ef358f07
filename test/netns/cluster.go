package netns

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
)

// Cluster is a pod network in miniature: a "node" namespace that routes
// between pods, and pods each linked to it by a veth pair, the way a CNI
// plugin wires a node. Pod number n (from 1) gets 10.244.n.2/24 and
// fd00:244:n::2/64 on its eth0, with the node's end (10.244.n.1,
// fd00:244:n::1) as its default gateway, so every pod reaches every other
// pod and no packet can leave the namespaces.
type Cluster struct {
	Node *NS
	t    testing.TB

	mu   sync.Mutex
	pods int
}

// Pod is a pod namespace with its addresses.
type Pod struct {
	*NS
	IPv4 netip.Addr
	IPv6 netip.Addr
}

// NewCluster creates the node namespace with forwarding on.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	node := New(t, "node")
	node.MustExec("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	// The kernel may have no IPv6; the pods' IPv6 addresses then fail loudly.
	_, _ = node.Exec("sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding")
	return &Cluster{Node: node, t: t}
}

// AddPod creates a pod namespace attached to the node; at most 254 pods.
func (c *Cluster) AddPod(t testing.TB, name string) *Pod {
	t.Helper()
	c.mu.Lock()
	c.pods++
	n := c.pods
	c.mu.Unlock()
	if n > 254 {
		t.Fatalf("a Cluster holds at most 254 pods")
	}
	pod := New(t, name)
	Link(t, pod, fmt.Sprintf("10.244.%d.2/24", n), c.Node, fmt.Sprintf("10.244.%d.1/24", n))
	// Both families share one veth: add the IPv6 addresses to the same pair.
	pod.MustExec("ip", "addr", "add", fmt.Sprintf("fd00:244:%x::2/64", n), "dev", "eth0", "nodad")
	c.Node.MustExec("ip", "addr", "add", fmt.Sprintf("fd00:244:%x::1/64", n), "dev", fmt.Sprintf("eth%d", n-1), "nodad")
	pod.MustExec("ip", "route", "add", "default", "via", fmt.Sprintf("10.244.%d.1", n))
	pod.MustExec("ip", "-6", "route", "add", "default", "via", fmt.Sprintf("fd00:244:%x::1", n))
	return &Pod{
		NS:   pod,
		IPv4: netip.MustParseAddr(fmt.Sprintf("10.244.%d.2", n)),
		IPv6: netip.MustParseAddr(fmt.Sprintf("fd00:244:%x::2", n)),
	}
}
