// Package route owns HTTP routing in weft-proxy: it applies the rules that
// the control plane compiles from Gateway API HTTPRoutes (GAMMA mesh profile)
// and TrafficSplits to outbound requests for one service port. It matches
// requests (path Exact / segment-wise PathPrefix / RegularExpression, headers,
// query parameters, method, hostnames) with the Gateway API precedence rules
// (precedence.go), applies the filters (RequestHeaderModifier,
// ResponseHeaderModifier, URLRewrite, RequestRedirect, RequestMirror), picks a
// weighted backend and an endpoint (package balance), and forwards with
// HTTPRouteTimeouts and retries under a budget.
//
// It must not listen, detect protocols, dial, do TLS, pool connections or
// register metrics: those belong to the proxy core. It imports no other
// proxy/ package and nothing from k8s.io.
//
// # The seam with the proxy core
//
// For each snapshot, for each HTTP service port:
//
//	t, err := route.Compile(port, route.Options{
//		Transport:   func(ep meshconfig.Endpoint) http.RoundTripper { ... }, // plaintext or mTLS to ep.Identity
//		Store:       store,  // one balance.Store for the proxy's lifetime
//		RetryBudget: budget, // one per service port, reused across snapshots
//		Observe:     func(r route.Result) { ... }, // metrics hook, optional
//	})
//
// then swap the tables in with an atomic.Pointer and call t.ServeHTTP for each
// request whose destination is that port. After all tables of a snapshot are
// compiled, store.Retain(...) with the union of Table.Addresses forgets
// endpoints that left. A Table is immutable and safe for concurrent use; the
// routing decision (match, weighted backend, power-of-two-choices endpoint)
// takes no lock and allocates nothing. Requests in flight keep the Table they
// started with, so a weight change affects only new requests, and endpoint
// state (latency EWMA, failure accrual, in-flight counts) lives in the Store
// keyed by address, so it survives the swap for endpoints that remain.
//
// Transport contract: Transport is called at Compile, once per endpoint. The
// request it receives has URL http://<endpoint address><path> and the
// client's Host header (or the URLRewrite hostname); the transport dials that
// address and owns TLS. It should report a failure to connect as a
// *net.OpError with Op "dial" (http.Transport does) or wrap ErrNotSent, so
// that a non-idempotent request that never left can still be retried.
//
// # Answers the package gives itself
//
//   - 500 when the rule has no backend or all its weights are 0 (HTTPBackendRef).
//   - 503 when the chosen backend has no endpoint that can take the request
//     (none, or all at their request limit).
//   - 502 when the last attempt failed to connect or broke.
//   - 504 when the request or backend request timeout expired.
//
// No matching rule sends the request to the port's DefaultBackends.
//
// # Retries
//
// See retry.go for the exact rule. In short: only with a rule Retry; bodies up
// to Options.ReplayBuffer (64 KiB) are replayable; idempotent methods retry on
// connection failures and Retry.Codes; POST and other non-idempotent methods
// retry only when the request never reached the backend (connection refused);
// exponential backoff with jitter; a RetryBudget keeps retries at ≤ 20% of
// requests plus a small burst. Without a rule Retry, a request with no body
// that never reached the backend (connection refused) is still retried on
// another pick, twice at most, under the same budget: an endpoint that went
// away before the proxy heard of it costs no error. A peer proxy that could
// not reach its own application answers with HeaderNotSent, which counts the
// same. A retry never goes to the endpoint that just failed when there is
// another (balance.PickExcept): a fast failure scores well until ejected.
//
// # Not supported
//
// Protocol upgrades (WebSocket, 101 Switching Protocols) are not relayed
// through a route table; hostname precedence between routes is not applied
// (see precedence.go); request bodies larger than the replay buffer are not
// mirrored.
package route
