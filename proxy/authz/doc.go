// Package authz is the proxy's inbound authorization engine: it compiles the
// snapshot's AuthorizationPolicies (pkg/meshconfig) into an immutable Engine
// and answers, for one inbound request or TCP connection, allow or deny.
//
// Semantics, in evaluation order:
//
//  1. A Deny policy selecting the port whose rule matches denies.
//  2. If any Allow policy selects the port, the request is allowed only when
//     one of their rules matches.
//  3. Otherwise the workload's default applies: Allow, Deny, or
//     Authenticated (any verified mesh identity).
//
// A caller is its verified SPIFFE ID; namespaces and service accounts are read
// from that ID ("spiffe://<td>/ns/<ns>/sa/<sa>", same trust domain only). An
// empty ID is an unauthenticated (plaintext) caller; in a Strict snapshot
// such a caller is denied whatever the policies say.
//
// Opaque TCP has no method or path. A rule that names methods or paths is
// evaluated as if they matched for Deny and as if they did not for Allow, so
// an L4 decision is never more permissive than the L7 one (fail closed).
//
// Matching is asymmetric on purpose where applications differ: methods match
// case-insensitively, Deny paths match case-insensitively and treat ';' as a
// segment end (Tomcat-style path parameters), Allow paths match exactly. A
// Deny therefore covers every spelling an application might fold together,
// while an Allow never grants more than it names.
//
// Decisions take no lock and allocate nothing. The package does not parse or
// normalize requests (proxy/httpguard does) and does not read connections.
package authz
