package cpclient

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/grpc/status"

	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/identity"
	"github.com/weftmesh/weft/proxy/metrics"
)

// maxSnapshot bounds a snapshot before it is decoded; gRPC's own 4 MiB
// receive limit applies first, this keeps the bound explicit.
const maxSnapshot = 4 << 20

// streamLoop holds the config stream open until ctx ends. A stream that
// delivered something, or stayed open longer than the longest backoff,
// resets the backoff: it was a working connection that ended, not a control
// plane still down. (A reconnecting proxy that already holds the current
// version may legitimately receive nothing.)
func (c *Client) streamLoop(ctx context.Context, cli meshapiv1.ConfigClient) {
	bo := backoff{min: c.s.MinBackoff, max: c.s.MaxBackoff}
	log := c.s.Log.With("controlPlane", c.s.Addr)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			c.s.Metrics.Reconnect()
		}
		start := c.s.Clock.Now()
		got, err := c.streamOnce(ctx, cli, log)
		c.s.Metrics.Connected(false)
		if ctx.Err() != nil {
			return
		}
		if got || c.s.Clock.Now().Sub(start) > c.s.MaxBackoff {
			bo.reset()
		}
		next := bo.next()
		st := status.Convert(err)
		log.Warn("Config stream ended, serving the last snapshot until it is back",
			"code", st.Code().String(), "err", st.Message(), "lastVersion", c.LastVersion(), "retryIn", next)
		if !c.wait(ctx, next, nil) {
			return
		}
	}
}

// streamOnce runs one stream until it fails; got says whether a snapshot
// arrived on it.
func (c *Client) streamOnce(ctx context.Context, cli meshapiv1.ConfigClient, log *slog.Logger) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cli.Stream(ctx)
	if err != nil {
		return false, err
	}
	hello := &meshapiv1.Hello{
		PodName: c.s.PodName, PodNamespace: c.s.PodNamespace,
		ProxyVersion: c.s.ProxyVersion, LastVersion: c.LastVersion(),
		AcceptsDeltas: true, TrustBundleSha256: c.heldBundle(),
	}
	if err := stream.Send(&meshapiv1.ConfigRequest{Kind: &meshapiv1.ConfigRequest_Hello{Hello: hello}}); err != nil {
		return false, meshapiv1.SendError(stream, err)
	}
	c.s.Metrics.Connected(true)
	log.Info("Config stream open", "lastVersion", hello.LastVersion)
	for {
		resp, err := stream.Recv()
		if err != nil {
			return got, err
		}
		got = true
		ack := &meshapiv1.Ack{Version: resp.GetVersion()}
		if err := c.handle(resp); err != nil {
			ack.Error = err.Error()
			c.s.Metrics.Snapshot(metrics.Rejected)
			log.Error("Snapshot rejected, keeping the previous one", "version", resp.GetVersion(), "current", c.LastVersion(), "err", err)
		} else {
			c.s.Metrics.Snapshot(metrics.Applied)
		}
		if err := stream.Send(&meshapiv1.ConfigRequest{Kind: &meshapiv1.ConfigRequest_Ack{Ack: ack}}); err != nil {
			return got, meshapiv1.SendError(stream, err)
		}
	}
}

// handle checks a response whole before changing anything: a response with
// a bad snapshot, a delta that does not apply to the snapshot held, or a
// bad bundle is refused as a unit.
func (c *Client) handle(resp *meshapiv1.ConfigResponse) error {
	if resp.GetVersion() == "" {
		return errors.New("response has no version")
	}
	if len(resp.GetSnapshot()) > maxSnapshot {
		return fmt.Errorf("snapshot of %d bytes is larger than %d", len(resp.GetSnapshot()), maxSnapshot)
	}
	if len(resp.GetDelta()) > maxSnapshot {
		return fmt.Errorf("delta of %d bytes is larger than %d", len(resp.GetDelta()), maxSnapshot)
	}
	bundle := resp.GetTrustBundle()
	if len(bundle) > 0 {
		if _, err := identity.ParseBundle(c.s.id.TrustDomain(), bundle); err != nil {
			return err
		}
	}
	snap, err := c.decode(resp)
	if err != nil {
		return err
	}
	if snap.Version != resp.GetVersion() {
		return fmt.Errorf("snapshot says version %q, response says %q", snap.Version, resp.GetVersion())
	}
	if snap.Identity != "" && snap.Identity != c.s.id.String() {
		return fmt.Errorf("snapshot was built for %s, this proxy is %s", snap.Identity, c.s.id)
	}
	if err := c.s.Proxy.Apply(snap); err != nil {
		return fmt.Errorf("applying snapshot: %w", err)
	}
	c.mu.Lock()
	c.lastVersion = snap.Version
	c.current = snap
	c.mu.Unlock()
	if len(bundle) > 0 {
		c.setBundle(bundle)
	}
	return nil
}

// decode reads the snapshot a response sends: whole, or as a delta applied
// to the snapshot held, which must be the delta's base.
func (c *Client) decode(resp *meshapiv1.ConfigResponse) (*meshconfig.Snapshot, error) {
	if len(resp.GetDelta()) == 0 {
		return meshconfig.Decode(resp.GetSnapshot())
	}
	if len(resp.GetSnapshot()) > 0 {
		return nil, errors.New("response carries both a snapshot and a delta")
	}
	c.mu.Lock()
	base := c.current
	c.mu.Unlock()
	if base == nil || base.Version != resp.GetBaseVersion() {
		held := ""
		if base != nil {
			held = base.Version
		}
		return nil, fmt.Errorf("delta applies to version %q, but this proxy holds %q", resp.GetBaseVersion(), held)
	}
	d, err := meshconfig.DecodeDelta(resp.GetDelta())
	if err != nil {
		return nil, err
	}
	if d.BaseVersion != resp.GetBaseVersion() {
		return nil, fmt.Errorf("delta says base version %q, response says %q", d.BaseVersion, resp.GetBaseVersion())
	}
	return d.Apply(base)
}

// heldBundle is the hash of the trust bundle last installed from the
// stream, for Hello.
func (c *Client) heldBundle() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bundleSum
}

// setBundle installs a checked trust bundle. If the proxy's own certificate
// no longer chains to it, the anchor it was issued under is being retired:
// renew now rather than at the usual time.
func (c *Client) setBundle(bundle []byte) {
	changed, ok, err := c.s.Identity.SetBundle(bundle)
	if err != nil {
		// Parsed above and the certificate exists before the stream opens,
		// so this is not expected; the old bundle stays.
		c.s.Log.Error("Trust bundle not installed", "err", err)
		return
	}
	sum := sha256.Sum256(bundle)
	c.mu.Lock()
	c.bundleSum = sum[:]
	c.mu.Unlock()
	if changed {
		c.s.Metrics.BundleUpdated()
	}
	if !ok {
		c.s.Log.Warn("The workload certificate does not chain to the new trust bundle, renewing it now")
		select {
		case c.renewNow <- struct{}{}:
		default:
		}
	}
}
