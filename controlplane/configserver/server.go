package configserver

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/controlplane/compiler"
	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
)

// maxPending bounds the snapshots remembered per proxy while waiting for
// their acks; a proxy that never acks cannot grow it.
const maxPending = 8

// Server implements meshapiv1.ConfigServer on top of a Hub.
type Server struct {
	meshapiv1.UnimplementedConfigServer
	Hub         *Hub
	TrustDomain spiffeid.TrustDomain
}

// bigDelta is the size from which a delta, like a full snapshot, takes an
// in-flight slot (Hub.MaxInFlight): smaller ones cannot pin much memory.
const bigDelta = 64 << 10

// proxy is one connected stream.
type proxy struct {
	namespace, pod, proxyVersion string
	id                           spiffeid.ID
	// deltas: the proxy said it accepts deltas.
	deltas bool
	notify chan struct{}

	mu          sync.Mutex
	cur         *view
	pending     map[string]*held
	order       []string
	sentVersion string
	sentFP      [32]byte
	// sentBundle is the hash of the trust bundle last sent.
	sentBundle [32]byte
	// answered says the proxy answered the last response sent, or did not
	// within the ack timeout. A proxy that accepts deltas is sent nothing
	// new until then: its answer says which snapshot it holds, the base of
	// the next delta. (Changes meanwhile are folded into one response.)
	answered bool
	// resendFull says the proxy rejected a delta: it is sent its current
	// snapshot whole.
	resendFull bool
	// awaitingReply says the proxy has not answered the last response
	// sent, timed out or not: something must be reading the stream for
	// that answer (see receiving).
	awaitingReply bool
	// receiving says a goroutine is reading the stream. It runs only
	// while an answer is awaited: a thousand idle proxies then hold no
	// goroutine of ours besides the stream's own.
	receiving    bool
	acked        *held
	ackedVersion string
	ackErr       string
	// slots release the in-flight slots of snapshots not yet acked.
	slots []func()
}

// inbound is the inbound part of the proxy's current view, nil before one.
func (p *proxy) inbound() *inboundPart {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return nil
	}
	return p.cur.in
}

func (p *proxy) holdSlot(release func()) {
	p.mu.Lock()
	p.slots = append(p.slots, release)
	p.mu.Unlock()
}

// releaseSlots frees every in-flight slot this proxy holds: an ack answers
// all snapshots sent before it (a proxy applies only the newest).
func (p *proxy) releaseSlots() {
	p.mu.Lock()
	slots := p.slots
	p.slots = nil
	p.mu.Unlock()
	for _, r := range slots {
		r()
	}
}

// update installs a freshly compiled view and reports whether the proxy
// needs a new snapshot. An unchanged view still replaces the old one, so old
// worlds are not kept alive by idle proxies.
func (p *proxy) update(v *view) bool {
	p.mu.Lock()
	changed := p.cur == nil || p.cur.fp != v.fp
	p.cur = v
	p.mu.Unlock()
	if changed {
		p.wake()
	}
	return changed
}

func (p *proxy) wake() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// next says whether the proxy is to be sent its current view now, given
// the hash of the trust bundle it is to hold.
func (p *proxy) next(bundle [32]byte) (v *view, send bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	need := p.sentVersion == "" || p.cur.fp != p.sentFP || p.resendFull || p.sentBundle != bundle
	wait := p.deltas && p.sentVersion != "" && !p.answered
	return p.cur, need && !wait
}

// deltaBase is the snapshot the proxy holds that a delta can be made
// against, or nil: the last it acknowledged, else the one it said in Hello
// it holds, if this replica knows what that is.
func (p *proxy) deltaBase(bases *baseCache, hello string) *held {
	if !p.deltas {
		return nil
	}
	p.mu.Lock()
	base, resend := p.acked, p.resendFull
	p.mu.Unlock()
	if resend {
		return nil
	}
	if base == nil && hello != "" {
		base = bases.get(hello)
	}
	if base == nil || base.out == nil {
		return nil
	}
	return base
}

func (p *proxy) recordSent(h *held, bundle [32]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sentBundle = bundle
	if _, ok := p.pending[h.version]; !ok {
		p.order = append(p.order, h.version)
	}
	p.pending[h.version] = h
	for len(p.order) > maxPending {
		delete(p.pending, p.order[0])
		p.order = p.order[1:]
	}
	p.sentVersion = h.version
	p.sentFP = h.fp
	p.answered = false
	p.awaitingReply = true
	if !h.delta {
		p.resendFull = false
	}
}

// ackTimedOut gives up waiting for the answer to version: the next change
// is sent anyway (as a delta against the last acked snapshot: a proxy that
// holds another rejects it and is sent the full snapshot).
func (p *proxy) ackTimedOut(version string) {
	p.mu.Lock()
	fire := p.sentVersion == version && !p.answered
	if fire {
		p.answered = true
	}
	p.mu.Unlock()
	if fire {
		p.wake()
	}
}

// ack records an Ack; it reports false for a version this proxy was not
// sent (or was sent too long ago to remember), and the snapshot acked.
func (p *proxy) ack(version, errMsg string) (known bool, acked *held) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.pending[version]
	if !ok && version != p.ackedVersion {
		return false, nil
	}
	if version == p.sentVersion {
		p.awaitingReply = false
	}
	if version == p.sentVersion && !p.answered {
		p.answered = true
		// The loop may be waiting for this answer.
		select {
		case p.notify <- struct{}{}:
		default:
		}
	}
	if errMsg != "" {
		p.ackErr = errMsg
		if ok && c.delta && version == p.sentVersion {
			p.resendFull = true
		}
		return true, nil
	}
	if ok {
		p.acked = c
		// Older versions can no longer be acked meaningfully.
		for i, v := range p.order {
			if v == version {
				for _, old := range p.order[:i+1] {
					delete(p.pending, old)
				}
				p.order = p.order[i+1:]
				break
			}
		}
	}
	p.ackedVersion = version
	p.ackErr = ""
	return true, p.acked
}

// Stream serves one proxy: Hello, a snapshot, acks, newer snapshots.
//
// A proxy's stream lives for days, waiting in serve: the checks and the
// first compilation run in open, whose large frame is gone by then, which
// keeps the frames below the wait small (about 250 bytes of ours instead of
// 960).
func (s *Server) Stream(stream meshapiv1.Config_StreamServer) error {
	c, err := s.open(stream)
	if err != nil {
		return err
	}
	defer s.close(c)
	return s.serve(stream, c)
}

// conn is one proxy's stream once it is admitted.
type conn struct {
	p   *proxy
	log proxyLog
	// lastVersion and heldBundle are what the proxy said in Hello it holds.
	lastVersion string
	heldBundle  []byte
}

// open checks the proxy's identity and Hello, compiles its view and
// registers it with the hub.
func (s *Server) open(stream meshapiv1.Config_StreamServer) (*conn, error) {
	ctx := stream.Context()
	h := s.Hub
	h.init()
	id, err := peerID(ctx)
	if err != nil {
		return nil, err
	}
	ns, sa, err := s.serviceAccount(id)
	if err != nil {
		return nil, err
	}
	select {
	case <-h.ready:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	req, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	hello := req.GetHello()
	if hello == nil {
		return nil, status.Error(codes.InvalidArgument, "the first message on the Config stream must be a Hello")
	}
	pod, err := s.checkPod(ctx, hello, id, ns, sa)
	if err != nil {
		h.Log.Info("Refused a proxy", "identity", id.String(), "pod", hello.GetPodNamespace()+"/"+hello.GetPodName(), "reason", status.Convert(err).Message())
		return nil, err
	}
	// Not a logger WithValues: that clones the logger's core, a KiB per
	// proxy kept for the stream's life.
	log := proxyLog{log: h.Log, kv: []any{"pod", pod.Namespace + "/" + pod.Name, "identity", id.String(), "proxyVersion", hello.GetProxyVersion()}}

	v, err := h.viewFor(pod)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "cannot compile the configuration: %v", err)
	}
	p := &proxy{
		namespace: pod.Namespace, pod: pod.Name, proxyVersion: hello.GetProxyVersion(), id: id,
		deltas: hello.GetAcceptsDeltas(),
		notify: make(chan struct{}, 1), pending: map[string]*held{}, cur: v,
	}
	if h.add(p, v) {
		if nv, err := h.viewFor(pod); err == nil {
			p.update(nv)
		}
	}
	log.Info("Proxy connected", "lastVersion", hello.GetLastVersion(), "deltas", p.deltas)
	// A reconnecting proxy that holds the current snapshot and trust
	// bundle is not sent them again; one that holds an older snapshot that
	// this replica knows may be sent a delta.
	return &conn{p: p, log: log, lastVersion: hello.GetLastVersion(), heldBundle: hello.GetTrustBundleSha256()}, nil
}

// close unregisters the proxy.
func (s *Server) close(c *conn) {
	c.log.Info("Proxy disconnected")
	c.p.releaseSlots()
	s.Hub.remove(c.p)
}

// serve sends the proxy what it should hold whenever that changes, until
// the stream ends.
func (s *Server) serve(stream meshapiv1.Config_StreamServer, c *conn) error {
	ctx := stream.Context()
	// Acks are read by a goroutine started when a response is sent and
	// ended once the proxy answered it; until then gRPC buffers what the
	// proxy sends. A proxy that goes away ends ctx.
	recvErr := make(chan error, 1)
	for {
		if err := s.sendIfNeeded(stream, c, recvErr); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case err := <-recvErr:
			return err
		case <-c.p.notify:
		}
	}
}

// sendIfNeeded sends what the proxy should hold if it does not hold it yet.
func (s *Server) sendIfNeeded(stream meshapiv1.Config_StreamServer, c *conn, recvErr chan<- error) error {
	p := c.p
	v, need := p.next(s.Hub.wantBundle())
	if !need {
		return nil
	}
	if err := s.send(stream, p, v, c.lastVersion, c.heldBundle); err != nil {
		return err
	}
	c.lastVersion, c.heldBundle = "", nil
	if p.startReceiving() {
		go func() {
			if err := s.receive(stream, p, c.log); err != nil {
				recvErr <- err
			}
		}()
	}
	return nil
}

// send sends v's snapshot, unless its version and the trust bundle are held
// (what the proxy said in Hello it has): as a delta when the proxy accepts them and holds a snapshot this
// replica can diff against, else whole. Full snapshots are built here,
// under the semaphore, and dropped after: with a thousand services each is
// megabytes, and a thousand proxies connecting at once must not hold one
// each.
func (s *Server) send(stream meshapiv1.Config_StreamServer, p *proxy, v *view, hello string, heldBundle []byte) error {
	h := s.Hub
	version := h.versionOf(v)
	bundle, bundleSum := h.bundle()
	// A bundle that changed while the proxy was away must reach it although
	// its snapshot is current. A proxy too old to say what it holds is sent
	// both again.
	bundleHeld := len(bundle) == 0 || bytes.Equal(heldBundle, bundleSum[:])
	if hello != "" && version == hello && bundleSum == h.wantBundle() && bundleHeld {
		p.recordSent(heldOf(version, v, false), bundleSum)
		_, acked := p.ack(version, "")
		h.bases.put(acked)
		h.signal()
		return nil
	}
	resp := &meshapiv1.ConfigResponse{Version: version}
	base := p.deltaBase(h.bases, hello)
	if base != nil {
		d, err := h.deltas.getOrBuild(cacheKey{base: base.fp, fp: v.fp}, func() (*compiler.Snapshot, error) {
			b, err := buildDelta(base, v, version)
			return &compiler.Snapshot{Version: version, JSON: b}, err
		})
		if err != nil {
			return status.Errorf(codes.Internal, "cannot build the delta: %v", err)
		}
		resp.Delta, resp.BaseVersion = d.JSON, base.version
	}

	var release func()
	if base == nil || len(resp.Delta) > bigDelta {
		select {
		case h.sendSem <- struct{}{}:
		case <-stream.Context().Done():
			return status.FromContextError(stream.Context().Err()).Err()
		}
		var once sync.Once
		release = func() { once.Do(func() { <-h.sendSem }) }
	}
	sent := false
	defer func() {
		if !sent && release != nil {
			release()
		}
	}()
	var msg any = resp
	if base == nil {
		enc, err := h.snaps.encoded(v, bundle, bundleSum)
		if err != nil {
			return status.Errorf(codes.Internal, "cannot build the snapshot: %v", err)
		}
		resp, msg = enc.ConfigResponse, enc
	} else {
		resp.TrustBundle = bundle
	}
	// Recorded before Send so an ack racing the return of Send is known.
	p.recordSent(heldOf(resp.Version, v, base != nil), bundleSum)
	if err := stream.SendMsg(msg); err != nil {
		return err
	}
	sent = true
	// An in-flight slot is freed by the proxy's next ack, the end of its
	// stream, or the timeout, whichever comes first. The timeout also ends
	// the wait for this response's answer.
	version = resp.Version
	t := time.AfterFunc(h.AckTimeout, func() {
		if release != nil {
			release()
		}
		p.ackTimedOut(version)
	})
	if release != nil {
		p.holdSlot(func() { t.Stop(); release() })
	}
	h.Metrics.snapshotsSent.Inc()
	if base != nil {
		h.Metrics.deltasSent.Inc()
	}
	h.Metrics.bytesSent.Add(float64(len(resp.Snapshot) + len(resp.Delta)))
	h.signal()
	return nil
}

// startReceiving says whether the caller is to start a goroutine reading
// the stream: an answer is awaited and none is reading.
func (p *proxy) startReceiving() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.receiving || !p.awaitingReply {
		return false
	}
	p.receiving = true
	return true
}

// stopReceiving says whether the reading goroutine may end: the proxy
// answered the last response sent. Decided under the lock that recordSent
// takes, so a response sent meanwhile either keeps this reader or starts
// another.
func (p *proxy) stopReceiving() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.awaitingReply {
		return false
	}
	p.receiving = false
	return true
}

// receive reads acks until the proxy answered the last response sent; it
// returns nil then, and the error that ends the stream otherwise.
func (s *Server) receive(stream meshapiv1.Config_StreamServer, p *proxy, log proxyLog) error {
	h := s.Hub
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		a := req.GetAck()
		if a == nil {
			return status.Error(codes.InvalidArgument, "only Acks may follow the Hello")
		}
		p.releaseSlots()
		known, acked := p.ack(a.GetVersion(), a.GetError())
		if !known {
			log.V(1).Info("Ignoring an ack for a version this proxy was not sent", "version", a.GetVersion())
			continue
		}
		if acked != nil {
			h.bases.put(acked)
		}
		if a.GetError() != "" {
			h.Metrics.acks.WithLabelValues("nack").Inc()
			log.Info("Proxy rejected a snapshot", "version", a.GetVersion(), "error", a.GetError())
		} else {
			h.Metrics.acks.WithLabelValues("ack").Inc()
		}
		h.signal()
		if p.stopReceiving() {
			return nil
		}
	}
}

// proxyLog logs with a proxy's key/value pairs.
type proxyLog struct {
	log logr.Logger
	kv  []any
}

func (l proxyLog) Info(msg string, kv ...any) { l.log.Info(msg, append(kv, l.kv...)...) }

func (l proxyLog) V(level int) proxyLog { return proxyLog{log: l.log.V(level), kv: l.kv} }

// peerID is the SPIFFE ID of the verified client certificate.
func peerID(ctx context.Context) (spiffeid.ID, error) {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, "no peer information")
	}
	info, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return spiffeid.ID{}, status.Error(codes.Unauthenticated, "the Config stream requires the proxy's workload certificate (mutual TLS)")
	}
	id, err := x509svid.IDFromCert(info.State.VerifiedChains[0][0])
	if err != nil {
		return spiffeid.ID{}, status.Errorf(codes.Unauthenticated, "the client certificate carries no SPIFFE ID: %v", err)
	}
	return id, nil
}

// serviceAccount splits spiffe://<td>/ns/<ns>/sa/<sa>.
func (s *Server) serviceAccount(id spiffeid.ID) (ns, sa string, err error) {
	if id.TrustDomain() != s.TrustDomain {
		return "", "", status.Errorf(codes.PermissionDenied, "identity %s is not in trust domain %s", id, s.TrustDomain)
	}
	parts := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" {
		return "", "", status.Errorf(codes.PermissionDenied, "identity %s is not a workload identity (/ns/<namespace>/sa/<serviceaccount>)", id)
	}
	return parts[1], parts[3], nil
}

// checkPod finds the pod Hello names and checks that the certificate's
// identity may speak for it.
func (s *Server) checkPod(ctx context.Context, hello *meshapiv1.Hello, id spiffeid.ID, ns, sa string) (*corev1.Pod, error) {
	name, podNS := hello.GetPodName(), hello.GetPodNamespace()
	if name == "" || podNS == "" {
		return nil, status.Error(codes.InvalidArgument, "Hello must name the proxy's pod (pod_name and pod_namespace)")
	}
	if podNS != ns {
		return nil, status.Errorf(codes.PermissionDenied, "identity %s cannot speak for pod %s/%s: it is in namespace %s", id, podNS, name, ns)
	}
	pod, err := s.Hub.getPod(ctx, podNS, name)
	if apierrors.IsNotFound(err) {
		return nil, status.Errorf(codes.PermissionDenied, "pod %s/%s does not exist", podNS, name)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "cannot read pod %s/%s: %v", podNS, name, err)
	}
	if !compiler.Meshed(pod) {
		return nil, status.Errorf(codes.PermissionDenied, "pod %s/%s is not meshed (no mesh.weft.dev/revision label)", podNS, name)
	}
	podSA := pod.Spec.ServiceAccountName
	if podSA == "" {
		podSA = "default"
	}
	if podSA != sa {
		return nil, status.Errorf(codes.PermissionDenied, "pod %s/%s runs as ServiceAccount %s, but the certificate proves %s", podNS, name, podSA, id)
	}
	return pod, nil
}

func (h *Hub) getPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	var pod corev1.Pod
	key := client.ObjectKey{Namespace: ns, Name: name}
	err := h.Cache.Get(ctx, key, &pod)
	if apierrors.IsNotFound(err) && h.APIReader != nil {
		err = h.APIReader.Get(ctx, key, &pod)
	}
	if err != nil {
		return nil, err
	}
	return &pod, nil
}
