package cpclient

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"google.golang.org/grpc/status"

	meshapiv1 "github.com/weftmesh/weft/pkg/meshapi/v1"
	"github.com/weftmesh/weft/proxy/identity"
)

// maxToken bounds what is read from the token path.
const maxToken = 64 << 10

// certifyLoop gets a certificate, then renews it in its renewal window,
// retrying failures with backoff. The current certificate stays in use
// until a new one has been checked. first is closed after the first success.
func (c *Client) certifyLoop(ctx context.Context, cli meshapiv1.IdentityClient, first chan<- struct{}) {
	bo := backoff{min: c.s.MinBackoff, max: c.s.MaxBackoff}
	log := c.s.Log.With("spiffeID", c.s.id.String(), "controlPlane", c.s.Addr)
	for {
		m, err := c.certify(ctx, cli)
		if ctx.Err() != nil {
			return
		}
		c.s.Metrics.Certify(err, notAfter(m))
		var next time.Duration
		if err != nil {
			next = bo.next()
			attrs := []any{"err", err, "retryIn", next}
			if cur := c.s.Identity.Current(); cur != nil {
				attrs = append(attrs, "currentNotAfter", cur.Cert.Leaf.NotAfter)
			}
			log.Error("Certificate request failed, keeping the current certificate", attrs...)
		} else {
			bo.reset()
			if prev := c.s.Identity.Current(); prev != nil && !prev.Bundle.Equal(m.Bundle) {
				c.s.Metrics.BundleUpdated()
				// The bundle no longer is the one the stream sent: Hello
				// must not claim it, so that the stream's is sent again.
				c.mu.Lock()
				c.bundleSum = nil
				c.mu.Unlock()
			}
			c.s.Identity.Set(m)
			at := renewAt(m.Cert.Leaf.NotBefore, m.Cert.Leaf.NotAfter)
			next = max(at.Sub(c.s.Clock.Now()), 0)
			log.Info("Certificate issued", "notAfter", m.Cert.Leaf.NotAfter, "serial", m.Cert.Leaf.SerialNumber.String(),
				"roots", len(m.Bundle.X509Authorities()), "renewAt", at)
			if first != nil {
				close(first)
				first = nil
			}
		}
		if !c.wait(ctx, next, c.renewNow) {
			return
		}
	}
}

func notAfter(m *identity.Material) time.Time {
	if m == nil {
		return time.Time{}
	}
	return m.Cert.Leaf.NotAfter
}

// certify makes a fresh key and asks the control plane to certify it.
func (c *Client) certify(ctx context.Context, cli meshapiv1.IdentityClient) (*identity.Material, error) {
	token, err := readToken(c.s.TokenPath)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating a key: %w", err)
	}
	u, err := url.Parse(c.s.id.String())
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		return nil, fmt.Errorf("building the CSR: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, c.s.RequestTimeout)
	defer cancel()
	resp, err := cli.Certify(rctx, &meshapiv1.CertifyRequest{Token: token, Csr: csr})
	if err != nil {
		st := status.Convert(err)
		return nil, fmt.Errorf("certify: %s: %s", st.Code(), st.Message())
	}
	if got := resp.GetSpiffeId(); got != "" && got != c.s.id.String() {
		return nil, fmt.Errorf("control plane certified %s, asked for %s", got, c.s.id)
	}
	bundle := resp.GetTrustBundle()
	if len(bundle) == 0 {
		// Verify against what we already trust rather than accept an
		// unverifiable leaf.
		if bundle = c.s.Identity.BundlePEM(); bundle == nil {
			bundle = c.s.TrustAnchors
		}
	}
	m, err := identity.FromDER(resp.GetCertChain(), key, bundle)
	if err != nil {
		return nil, fmt.Errorf("certificate from the control plane refused: %w", err)
	}
	if m.ID != c.s.id {
		return nil, fmt.Errorf("control plane certified %s, asked for %s", m.ID, c.s.id)
	}
	return m, nil
}

// readToken reads the projected token fresh: the kubelet replaces it well
// before it expires, and a token read once at start would go stale.
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("ServiceAccount token: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxToken+1))
	if err != nil {
		return "", fmt.Errorf("ServiceAccount token %s: %w", path, err)
	}
	if len(b) > maxToken {
		return "", fmt.Errorf("ServiceAccount token %s is larger than %d bytes", path, maxToken)
	}
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return "", errors.New("ServiceAccount token " + path + " is empty")
	}
	return string(t), nil
}
