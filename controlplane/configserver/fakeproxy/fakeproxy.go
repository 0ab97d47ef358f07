// Package fakeproxy is a minimal Config stream client for tests and the
// control-plane benchmark: it says Hello, acknowledges (or rejects) every
// snapshot, remembers the last one it applied and reconnects with backoff.
// With Deltas it accepts deltas and rejects one whose base is not the
// version it holds. It does not parse snapshots beyond JSON validity unless
// it keeps them; proxy/cpclient is the real client.
package fakeproxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

// Client is one fake proxy.
type Client struct {
	Addr         string
	TLS          *tls.Config
	Namespace    string
	Pod          string
	ProxyVersion string
	// Reject, if set, returns a non-empty reason to nack a version.
	Reject func(version string) string
	// SkipValidation does not check that snapshots are JSON (the benchmark
	// measures the control plane, not the load process's JSON scanner).
	SkipValidation bool
	// KeepSnapshot keeps the last applied snapshot for Snapshot (deltas are
	// applied with meshconfig, as a proxy does).
	KeepSnapshot bool
	// Deltas says in Hello that the proxy accepts deltas.
	Deltas bool
	// Received, if set, is called after each snapshot is answered.
	Received func(version string, at time.Time)

	mu       sync.Mutex
	last     string
	versions []string
	bundle   []byte
	snapshot []byte
	decoded  *meshconfig.Snapshot
	deltas   int
	err      error
	conn     *grpc.ClientConn
}

// Versions lists the versions received, in order.
func (c *Client) Versions() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.versions...)
}

// DeltasReceived counts the responses that were deltas.
func (c *Client) DeltasReceived() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deltas
}

// Last is the version last applied.
func (c *Client) Last() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Err is the error that ended the last stream.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Snapshot is the last applied snapshot (with KeepSnapshot).
func (c *Client) Snapshot() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snapshot
}

// TrustBundle is the bundle that came with the last snapshot.
func (c *Client) TrustBundle() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bundle
}

func (c *Client) dial() (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		return c.conn, nil
	}
	// A mesh of a thousand services makes snapshots of megabytes, past
	// gRPC's default 4 MiB receive limit.
	conn, err := grpc.NewClient(c.Addr, grpc.WithTransportCredentials(credentials.NewTLS(c.TLS)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return nil, err
	}
	c.conn = conn
	return conn, nil
}

// Close releases the connection.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}

// Run keeps a stream open until ctx ends, reconnecting with capped
// exponential backoff, as a proxy does while the control plane restarts.
func (c *Client) Run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		got, _ := c.Once(ctx)
		if got {
			backoff = 50 * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}

// Once runs one stream until it fails; got says whether anything was
// received (so Run resets its backoff).
func (c *Client) Once(ctx context.Context) (got bool, err error) {
	defer func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
	}()
	conn, err := c.dial()
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := meshapiv1.NewConfigClient(conn).Stream(ctx)
	if err != nil {
		return false, err
	}
	hello := &meshapiv1.Hello{PodName: c.Pod, PodNamespace: c.Namespace, ProxyVersion: c.ProxyVersion, LastVersion: c.Last(), AcceptsDeltas: c.Deltas}
	if b := c.TrustBundle(); b != nil {
		sum := sha256.Sum256(b)
		hello.TrustBundleSha256 = sum[:]
	}
	if err := stream.Send(&meshapiv1.ConfigRequest{Kind: &meshapiv1.ConfigRequest_Hello{Hello: hello}}); err != nil {
		return false, meshapiv1.SendError(stream, err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return got, err
		}
		got = true
		reason := c.check(resp)
		c.mu.Lock()
		c.versions = append(c.versions, resp.GetVersion())
		if resp.GetDelta() != nil {
			c.deltas++
		}
		if reason == "" {
			c.last = resp.GetVersion()
			c.bundle = resp.GetTrustBundle()
		}
		c.mu.Unlock()
		ack := &meshapiv1.Ack{Version: resp.GetVersion(), Error: reason}
		if err := stream.Send(&meshapiv1.ConfigRequest{Kind: &meshapiv1.ConfigRequest_Ack{Ack: ack}}); err != nil {
			return got, meshapiv1.SendError(stream, err)
		}
		if c.Received != nil {
			c.Received(resp.GetVersion(), time.Now())
		}
	}
}

// check decides the ack of resp, and keeps its snapshot if it is applied.
func (c *Client) check(resp *meshapiv1.ConfigResponse) string {
	isDelta := resp.GetDelta() != nil
	if isDelta {
		if !c.Deltas {
			return "this proxy does not accept deltas"
		}
		if last := c.Last(); resp.GetBaseVersion() != last {
			return fmt.Sprintf("delta applies to version %q, this proxy holds %q", resp.GetBaseVersion(), last)
		}
	}
	data := resp.GetSnapshot()
	if isDelta {
		data = resp.GetDelta()
	}
	if !c.SkipValidation && !json.Valid(data) {
		return "response is not JSON"
	}
	if c.Reject != nil {
		if r := c.Reject(resp.GetVersion()); r != "" {
			return r
		}
	}
	if !c.KeepSnapshot {
		return ""
	}
	var snap *meshconfig.Snapshot
	var err error
	if isDelta {
		var d *meshconfig.Delta
		if d, err = meshconfig.DecodeDelta(data); err == nil {
			c.mu.Lock()
			base := c.decoded
			c.mu.Unlock()
			snap, err = d.Apply(base)
		}
	} else {
		snap, err = meshconfig.Decode(data)
	}
	if err == nil && snap.Version != resp.GetVersion() {
		err = fmt.Errorf("snapshot says version %q, response says %q", snap.Version, resp.GetVersion())
	}
	if err != nil {
		return err.Error()
	}
	enc, err := meshconfig.Encode(snap)
	if err != nil {
		return err.Error()
	}
	c.mu.Lock()
	c.decoded, c.snapshot = snap, enc
	c.mu.Unlock()
	return ""
}
