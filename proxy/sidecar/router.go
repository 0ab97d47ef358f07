package sidecar

import (
	"log/slog"
	"net/http"
	"sync"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/route"
	"github.com/weftmesh/weft/proxy/route/balance"
	"github.com/weftmesh/weft/proxy/upstream"
)

// maxRouteEndpoints bounds the endpoint state RouteForwarders keeps.
const maxRouteEndpoints = 20000

// RouteForwarders returns the ForwarderFactory that applies the snapshot's
// HTTPRoute and TrafficSplit rules (package route): matching, filters,
// weighted backends, power-of-two-choices endpoints with failure accrual,
// timeouts and retries. Endpoint state and each port's retry budget live as
// long as the proxy, so a new snapshot keeps what was learnt about the
// endpoints that remain. Requests that upgrade the connection (WebSocket),
// which a route table does not relay, go to the port's default backends.
func RouteForwarders() ForwarderFactory {
	store := balance.NewStore(balance.Config{})
	var budgets sync.Map // "ns/name:port" → *route.RetryBudget
	return func(svc *meshconfig.Service, port *meshconfig.ServicePort, pool *upstream.Pool) http.Handler {
		key := svc.Namespace + "/" + svc.Name + ":" + port.Name
		b, _ := budgets.LoadOrStore(key, route.NewRetryBudget(0.2, 10))
		t, err := route.Compile(*port, route.Options{
			Transport:   pool.RoundTripper,
			Store:       store,
			RetryBudget: b.(*route.RetryBudget),
			Observe:     logFailure,
		})
		fallback := DefaultForwarder(svc, port, pool)
		if err != nil {
			// The snapshot was validated; a port the router cannot compile
			// still gets its default backends rather than nothing.
			return fallback
		}
		if store.Len() > maxRouteEndpoints {
			// Bound the state kept for endpoints that have left: past the
			// bound, keep only this port's. A forgotten endpoint loses its
			// latency history and nothing else.
			live := map[string]bool{}
			t.Addresses(func(a string) { live[a] = true })
			store.Retain(func(a string) bool { return live[a] })
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Upgrade") != "" {
				fallback.ServeHTTP(w, r)
				return
			}
			t.ServeHTTP(w, r)
		})
	}
}

// logFailure logs a request the proxy answered with an error of its own
// (502, 503, 504): what failed, where, after how many attempts.
func logFailure(r route.Result) {
	switch r.Outcome {
	case route.OutcomeUpstreamError, route.OutcomeTimeout, route.OutcomeUnavailable, route.OutcomeNoBackend:
		args := []any{"outcome", r.Outcome.String(), "status", r.Status, "backend", r.Backend, "endpoint", r.Endpoint, "attempts", r.Attempts}
		if r.Err != nil {
			args = append(args, "err", r.Err.Error())
		}
		slog.Default().Info("Request failed", args...)
	}
}
