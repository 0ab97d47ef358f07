package cpclient

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/sockmark"
)

// Client keeps a proxy's certificate and snapshot current. Create with New,
// then Run.
type Client struct {
	s *settings

	// renewNow asks the certificate loop to renew at once (a trust bundle
	// that no longer verifies the current certificate).
	renewNow chan struct{}

	mu          sync.Mutex
	lastVersion string // last snapshot applied, sent in Hello on reconnect
	// current is the last snapshot applied: the base of the next delta.
	current *meshconfig.Snapshot
	// bundleSum is the SHA-256 of the last trust bundle installed from the
	// config stream, sent in Hello so that a bundle that changed while the
	// stream was down is sent again (nil before one).
	bundleSum []byte
}

// New checks cfg; every problem with it is reported at once.
func New(cfg Config) (*Client, error) {
	s, err := cfg.check()
	if err != nil {
		return nil, err
	}
	return &Client{s: s, renewNow: make(chan struct{}, 1)}, nil
}

// ID is the SPIFFE ID the client asks for.
func (c *Client) ID() string { return c.s.id.String() }

// LastVersion is the version of the last snapshot applied ("" before one).
func (c *Client) LastVersion() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastVersion
}

// Run gets a first certificate, then holds the config stream open and keeps
// the certificate renewed until ctx ends. It returns an error only when the
// connections cannot be set up at all (a malformed address).
func (c *Client) Run(ctx context.Context) error {
	idConn, err := c.dial(false)
	if err != nil {
		return err
	}
	defer idConn.Close()
	cfgConn, err := c.dial(true)
	if err != nil {
		return err
	}
	defer cfgConn.Close()

	first := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.certifyLoop(ctx, meshapiv1.NewIdentityClient(idConn), first)
	}()
	select {
	case <-first:
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.streamLoop(ctx, meshapiv1.NewConfigClient(cfgConn))
		}()
	case <-ctx.Done():
	}
	wg.Wait()
	return nil
}

func (c *Client) dial(clientCert bool) (*grpc.ClientConn, error) {
	var opts []grpc.DialOption
	if c.s.Mark != 0 {
		d := net.Dialer{Control: sockmark.Control(c.s.Mark)}
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}))
	}
	conn, err := grpc.NewClient(c.s.Addr, append(opts,
		grpc.WithTransportCredentials(credentials.NewTLS(c.tlsConfig(clientCert))),
		// gRPC's own reconnection of the transport stays within our cap, so
		// that a restarted control plane is found again as soon as we retry.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: grpcbackoff.Config{
				BaseDelay: c.s.MinBackoff, Multiplier: 2, Jitter: 0.2, MaxDelay: c.s.MaxBackoff,
			},
			MinConnectTimeout: 20 * time.Second,
		}),
		// Detects a control plane that vanished without closing the
		// connection (node lost). Five minutes is the least gRPC servers
		// accept by default without answering with too_many_pings.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Minute, Timeout: 20 * time.Second}),
	)...)
	if err != nil {
		return nil, fmt.Errorf("control plane %q: %w", c.s.Addr, err)
	}
	return conn, nil
}

// wait sleeps for d on the client's clock, or until ctx ends or wake fires
// (nil never fires). It reports false when ctx ended.
func (c *Client) wait(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	select {
	case <-ctx.Done():
		return false
	case <-c.s.Clock.After(d):
	case <-wake:
	}
	return true
}
