// Package iptables owns the traffic interception that `weft-proxy init`
// programs in a pod's network namespace before the proxy starts: nat rules
// that redirect the pod's inbound and outbound TCP to the proxy.
//
// Rule generation is a pure function of a Config (see Render), so the rules
// can be reviewed and golden-tested; applying them is a thin layer that
// shells out to iptables-save/iptables-restore through a Runner. The package
// must not import any k8s.io package (it is part of proxy/), and it must only
// ever touch the nat table chains it owns (WEFT_*) plus one jump from each of
// PREROUTING and OUTPUT.
package iptables
