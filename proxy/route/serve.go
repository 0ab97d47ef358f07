package route

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/weftmesh/weft/proxy/internal/bodycopy"
	"github.com/weftmesh/weft/proxy/route/balance"
)

// Outcome classifies how a request ended, for metrics.
type Outcome uint8

const (
	// OutcomeResponse: a backend's response was relayed in full (any status).
	OutcomeResponse Outcome = iota
	// OutcomeRedirect: a RequestRedirect filter answered.
	OutcomeRedirect
	// OutcomeNoBackend: 500, no backend to choose (none, or all weights 0).
	OutcomeNoBackend
	// OutcomeUnavailable: 503, the backend has no endpoint able to take the
	// request (none at all, or all at their request limit).
	OutcomeUnavailable
	// OutcomeUpstreamError: 502, the last attempt failed to connect or broke.
	OutcomeUpstreamError
	// OutcomeTimeout: 504, the request or backend request timeout expired.
	OutcomeTimeout
	// OutcomeCanceled: the client went away; nothing more was written.
	OutcomeCanceled
	// OutcomeAborted: the response broke after its headers were sent.
	OutcomeAborted
)

var outcomeNames = [...]string{"response", "redirect", "no_backend", "unavailable", "upstream_error", "timeout", "canceled", "aborted"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// Result describes one finished request for Options.Observe.
type Result struct {
	Route    string // Route.Source, "" for the default backends
	Rule     string // rule name, "default" for the default backends
	Backend  string // "namespace/name" of the last attempt's backend
	Endpoint string // address of the last attempt's endpoint
	Status   int    // status sent to the client, 0 if none
	Attempts int    // tries made, retries included
	Outcome  Outcome
	Duration time.Duration
	// Err is the last attempt's error, when it failed without an answer.
	Err error
}

// ServeHTTP routes one request: match, filters, backend and endpoint choice,
// timeouts and retries, then relays the response. A response that breaks
// after its headers were written aborts the handler with
// http.ErrAbortHandler so that the client sees a broken response, not a
// truncated one that looks complete.
//
// The request sent upstream reuses r's header map, which a handler owns:
// hop-by-hop headers are removed from it and the request filters applied in
// place, so a caller that reads r.Header afterwards finds the fields as
// sent upstream.
func (t *Table) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	e := t.match(r)
	ru := t.def
	if e != nil {
		ru = e.rule
	}
	res := Result{Route: ru.route, Rule: ru.name}
	if t.opts.Observe != nil {
		defer func() {
			res.Duration = time.Since(start)
			t.opts.Observe(res)
		}()
	}
	t.serve(w, r, e, ru, &res)
}

func (t *Table) serve(w http.ResponseWriter, r *http.Request, e *entry, ru *rule, res *Result) {
	if rd := ru.redirect; rd != nil {
		w.Header().Set("Location", t.redirectLocation(r, rd, e))
		applyHeaders(w.Header(), ru.respHeaders)
		res.Status, res.Outcome = redirectStatus(rd), OutcomeRedirect
		w.WriteHeader(res.Status)
		return
	}
	if ru.total == 0 {
		// HTTPBackendRef: with no valid backend, or all weights 0, "the
		// implementation MUST return a 500 status code".
		t.fail(w, res, http.StatusInternalServerError, OutcomeNoBackend)
		return
	}
	ctx := r.Context()
	if d := ru.timeouts.Request.D(); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	out := t.outbound(ctx, r, e, ru)
	data, replayable, err := t.readBody(r, out, ru.retry != nil || len(ru.mirrors) > 0)
	if err != nil {
		res.Outcome = OutcomeCanceled
		if ctx.Err() == nil {
			t.fail(w, res, http.StatusBadRequest, OutcomeCanceled)
		}
		return
	}
	if replayable {
		for _, m := range ru.mirrors {
			t.mirror(out, data, m, ru)
		}
	}
	t.budget.deposit()
	safe := idempotent(r.Method)
	var failedEP *balance.Endpoint // the last attempt's, which a retry avoids
	for attempt := 1; ; attempt++ {
		b := ru.pickBackend() // per attempt: a retry may land on another backend of the split
		// A fast-failing endpoint scores well until it is ejected: a retry
		// goes to another endpoint than the one that just failed, if any.
		lease := balance.PickExcept(b.eps, failedEP)
		ep := lease.Endpoint()
		res.Backend, res.Attempts = b.name, attempt
		if ep == nil {
			t.fail(w, res, http.StatusServiceUnavailable, OutcomeUnavailable)
			return
		}
		res.Endpoint = ep.Addr()
		actx, acancel := ctx, context.CancelFunc(func() {})
		if d := ru.timeouts.BackendRequest.D(); d > 0 {
			actx, acancel = context.WithTimeout(ctx, d)
		}
		req := out
		if attempt == 1 && actx == ctx {
			// The first attempt sends out itself: nothing else holds it
			// (a mirror took a deep copy), and later attempts copy it.
			out.URL.Host = ep.Addr()
		} else {
			// A copy of its own, which a transport may still read after a
			// failed attempt returned.
			req = out.WithContext(actx)
			u := *out.URL
			u.Host = ep.Addr()
			req.URL = &u
		}
		if replayable && data != nil {
			req.Body = io.NopCloser(bytes.NewReader(data))
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
		}
		sent := time.Now()
		resp, err := b.rts[ep].RoundTrip(req)
		latency := time.Since(sent)
		failedEP = ep

		if err != nil {
			acancel()
			res.Err = err
			if ctx.Err() != nil { // the whole request is over, not this endpoint's fault
				lease.Done(latency, false)
				t.ended(w, r, res)
				return
			}
			lease.Done(latency, true)
			status, outcome := http.StatusBadGateway, OutcomeUpstreamError
			retry := safe || notSent(err)
			if actx.Err() != nil { // backend request timeout: treat as a 504 answer
				status, outcome = http.StatusGatewayTimeout, OutcomeTimeout
				retry = safe && ru.retry != nil && ru.retry.retriesStatus(status)
			}
			if retry && t.mayRetry(ru, attempt, replayable) {
				if !sleep(ctx, ru.retry.delay(attempt)) {
					t.ended(w, r, res)
					return
				}
				continue
			}
			if ru.retry == nil && notSent(err) && t.mayRetryUnsent(attempt, replayable) {
				if !sleep(ctx, t.unsent.delay(attempt)) {
					t.ended(w, r, res)
					return
				}
				continue
			}
			t.fail(w, res, status, outcome)
			return
		}
		if resp.Header.Get(HeaderNotSent) != "" {
			resp.Header.Del(HeaderNotSent)
			// The peer proxy could not reach its application: like a
			// refused connection, whatever the method.
			if t.mayRetry(ru, attempt, replayable) || (ru.retry == nil && t.mayRetryUnsent(attempt, replayable)) {
				discard(resp)
				acancel()
				lease.Done(latency, true)
				delay := t.unsent.delay(attempt)
				if ru.retry != nil {
					delay = ru.retry.delay(attempt)
				}
				if !sleep(ctx, delay) {
					t.ended(w, r, res)
					return
				}
				continue
			}
		}
		failed := resp.StatusCode >= 500
		if safe && ru.retry != nil && ru.retry.retriesStatus(resp.StatusCode) && t.mayRetry(ru, attempt, replayable) {
			discard(resp)
			acancel()
			lease.Done(latency, failed)
			if !sleep(ctx, ru.retry.delay(attempt)) {
				t.ended(w, r, res)
				return
			}
			continue
		}
		err = t.relay(w, resp, ru, res)
		acancel()
		lease.Done(latency, failed)
		if err != nil {
			if r.Context().Err() != nil {
				res.Outcome = OutcomeCanceled
				return
			}
			res.Outcome = OutcomeAborted
			panic(http.ErrAbortHandler)
		}
		return
	}
}

// mayRetryUnsent: a rule without a retry policy still retries a request
// that provably never reached the backend (the endpoint refused the
// connection: a pod shutting down, a stale endpoint), on another pick, up to
// unsentRetries times, under the same budget. No application can tell, and
// it is what keeps a rolling restart free of errors while the endpoint list
// catches up.
func (t *Table) mayRetryUnsent(attempt int, replayable bool) bool {
	return attempt <= t.unsent.attempts && replayable && t.budget.withdraw()
}

// mayRetry applies the attempt limit, replayability and the budget; the
// caller has already decided the failure is retryable.
func (t *Table) mayRetry(ru *rule, attempt int, replayable bool) bool {
	return ru.retry != nil && attempt <= ru.retry.attempts && replayable && t.budget.withdraw()
}

// ended answers a request whose context is done: 504 if our request timeout
// expired, nothing if the client went away.
func (t *Table) ended(w http.ResponseWriter, r *http.Request, res *Result) {
	if r.Context().Err() != nil {
		res.Outcome = OutcomeCanceled
		return
	}
	t.fail(w, res, http.StatusGatewayTimeout, OutcomeTimeout)
}

func (t *Table) fail(w http.ResponseWriter, res *Result, status int, o Outcome) {
	res.Status, res.Outcome = status, o
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, o.String()+"\n")
}

// outbound builds the request sent upstream: a copy of r, with r's header
// map (hop-by-hop headers removed and the request filters applied, in place).
// Its URL is http://<endpoint address><path>, set per attempt; the Host
// header is kept (or rewritten) and the transport owns TLS.
func (t *Table) outbound(ctx context.Context, r *http.Request, e *entry, ru *rule) *http.Request {
	out := r.WithContext(ctx)
	u := *r.URL
	u.Scheme = "http"
	out.URL = &u
	if out.Header == nil {
		out.Header = make(http.Header)
	}
	removeHopHeaders(out.Header, true)
	out.RequestURI = ""
	out.Close = false
	applyHeaders(out.Header, ru.reqHeaders)
	if rw := ru.rewrite; rw != nil {
		if rw.Hostname != "" {
			out.Host = rw.Hostname
		}
		if rw.Path != nil {
			if p, ok := modifyPath(u.Path, rw.Path, e); ok {
				u.Path, u.RawPath = p, ""
			}
		}
	}
	return out
}

// readBody decides whether the request body can be replayed. With want set it
// reads up to the replay buffer; a body that fits is kept (and replayable),
// a larger one is streamed to the first attempt only.
func (t *Table) readBody(r *http.Request, out *http.Request, want bool) (data []byte, replayable bool, err error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		out.Body, out.ContentLength = http.NoBody, 0
		return nil, true, nil
	}
	limit := int64(t.opts.ReplayBuffer)
	if !want || r.ContentLength > limit {
		return nil, false, nil
	}
	buf := make([]byte, 0, min(max(r.ContentLength, 512), limit+1))
	buf, err = readAtMost(r.Body, buf, limit+1)
	if err != nil {
		return nil, false, err
	}
	if int64(len(buf)) > limit {
		out.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		return nil, false, nil
	}
	out.ContentLength = int64(len(buf))
	out.Body = http.NoBody
	if len(buf) > 0 {
		out.Body = io.NopCloser(bytes.NewReader(buf))
	}
	return buf, true, nil
}

func readAtMost(r io.Reader, buf []byte, n int64) ([]byte, error) {
	for int64(len(buf)) < n {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := r.Read(buf[len(buf):min(int64(cap(buf)), n)])
		buf = buf[:len(buf)+m]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// discard drains a little of a response we will not relay so that its
// connection can be reused, then closes it.
func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
}

// relay writes resp to w. Streamed responses (unknown length: SSE, gRPC) are
// flushed after every read so that the proxy adds no buffering delay.
func (t *Table) relay(w http.ResponseWriter, resp *http.Response, ru *rule, res *Result) error {
	defer resp.Body.Close()
	h := w.Header()
	removeHopHeaders(resp.Header, false)
	for k, vs := range resp.Header {
		h[k] = vs
	}
	applyHeaders(h, ru.respHeaders)
	res.Status = resp.StatusCode
	w.WriteHeader(resp.StatusCode)
	var rc *http.ResponseController
	if resp.ContentLength < 0 {
		rc = http.NewResponseController(w)
		// The backend sent its headers ahead of the body: so do we (a
		// gRPC stream's metadata). A response that ended with its headers
		// (gRPC's trailers-only error) has ContentLength 0, not -1, and is
		// not flushed: it must end with its headers here too, not with an
		// empty DATA frame that leaves grpc-status in the headers.
		_ = rc.Flush()
	}
	var flush func()
	if rc != nil {
		flush = func() { _ = rc.Flush() }
	}
	if err := bodycopy.Copy(w, resp.Body, flush); err != nil {
		return err
	}
	for k, vs := range resp.Trailer {
		h[http.TrailerPrefix+k] = vs
	}
	res.Outcome = OutcomeResponse
	return nil
}

// mirror sends a copy of out to the mirror backend in the background. The
// copy has its own deadline, ignores the client's cancellation, and its
// answer is discarded: nothing it does reaches the client. Mirrors beyond
// MaxMirrors in flight are dropped rather than queued.
//
// Its context is a fresh one, not the client request's without its
// cancellation: the caller keeps per-request records in context values
// (the endpoint and TLS of the attempt, for metrics) that a copy still
// running in the background would write while the caller reads them.
func (t *Table) mirror(out *http.Request, data []byte, m mirror, ru *rule) {
	if m.percent < 100 && rand.Uint32N(100) >= m.percent {
		return
	}
	if t.mirrors.Add(1) > int64(t.opts.MaxMirrors) {
		t.mirrors.Add(-1)
		return
	}
	lease := balance.Pick(m.backend.eps)
	ep := lease.Endpoint()
	if ep == nil {
		t.mirrors.Add(-1)
		return
	}
	d := ru.timeouts.Request.D()
	if d <= 0 {
		d = t.opts.MirrorTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	req := out.Clone(ctx)
	req.URL.Host = ep.Addr()
	req.Body, req.ContentLength = http.NoBody, 0
	if len(data) > 0 {
		req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(data)), int64(len(data))
	}
	rt := m.backend.rts[ep]
	go func() {
		defer t.mirrors.Add(-1)
		defer cancel()
		sent := time.Now()
		resp, err := rt.RoundTrip(req)
		if err != nil {
			lease.Done(time.Since(sent), true)
			return
		}
		latency := time.Since(sent)
		discard(resp)
		lease.Done(latency, resp.StatusCode >= 500)
	}()
}
