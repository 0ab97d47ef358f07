// Package cpclient is the proxy's client of the Weft control plane. It gets
// the workload certificate from the Identity service (the key is generated in
// memory and never leaves the process), renews it before it expires, and
// holds the Config stream open: each snapshot (or delta against the one it
// holds) is decoded, applied to the proxy and acknowledged, or rejected with
// the reason while the last good one keeps serving. Trust bundles that come with snapshots replace the proxy's
// roots, so an anchor rotation needs no restart.
//
// While the control plane is unreachable the proxy keeps serving with what it
// has; the client retries with capped, jittered exponential backoff. It must
// not import k8s.io, must not write key material to disk, and must not decide
// what a snapshot means (that is the sidecar's Apply).
package cpclient

// Version is the proxy's version, reported to the control plane in Hello;
// set at link time with
// -ldflags "-X github.com/weftmesh/weft/proxy/cpclient.Version=v1.2.3".
var Version = "dev"
