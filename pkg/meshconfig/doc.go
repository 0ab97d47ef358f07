// Package meshconfig is the contract between the Weft control plane and the
// weft-proxy data plane: the immutable per-proxy snapshot that the control plane
// compiles from Services, EndpointSlices, HTTPRoutes, TrafficSplits and
// AuthorizationPolicies, and that a proxy swaps in atomically.
//
// It must stay free of k8s.io imports (the proxy depends on it) and free of
// behaviour beyond encoding and validation: routing, balancing and policy
// evaluation belong to the proxy, compilation to the control plane.
//
// A snapshot travels as JSON. Decoding is strict: an unknown field or an invalid
// value rejects the whole snapshot, so that a proxy never half-applies a config
// written by a newer control plane it does not understand (fail closed, keep the
// last good one).
//
// A change can also travel as a Delta against a snapshot the proxy holds:
// the outbound services that changed (by Service.Key; services are listed
// in key order), those removed, and the inbound part when it changed.
// Delta.Apply gives the same snapshot as sending it whole, validated the
// same way.
package meshconfig
