package pipe

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/proxy/internal/rawtcp"
	"github.com/weftmesh/weft/proxy/internal/testnet"
	"github.com/weftmesh/weft/proxy/internal/testpki"
)

// tlsConfigs returns a server configuration and a client one that trusts it.
func tlsConfigs(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	root := testpki.NewRoot(t, "root")
	leaf := root.Leaf(t, "spiffe://test.local/ns/a/sa/server", testpki.LeafOpts{})
	cert := tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}
	pool := x509.NewCertPool()
	pool.AddCert(root.Cert)
	server = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	client = &tls.Config{RootCAs: pool, ServerName: "server", MinVersion: tls.VersionTLS13,
		// The leaf names a SPIFFE ID, not a host: check the chain only.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool})
			return err
		}}
	return server, client
}

// relayTLS accepts TLS connections (over raw connections when wrap) and
// pipes each to target in plain TCP, as the inbound side of a proxy does.
// It returns the address to dial and a channel with each pipe's result.
func relayTLS(t *testing.T, target string, cfg *tls.Config, wrap bool, bufs rawtcp.Pool) (string, <-chan Result) {
	t.Helper()
	done := make(chan Result, 16)
	addr := testnet.Serve(t, func(a net.Conn) {
		if wrap {
			a = rawtcp.Wrap(a)
		}
		tc := tls.Server(a, cfg)
		if err := tc.Handshake(); err != nil {
			a.Close()
			return
		}
		b, err := net.Dial("tcp", target)
		if err != nil {
			tc.Close()
			return
		}
		done <- pipe(tc, b, nil, bufs)
	})
	return addr, done
}

func echo(c net.Conn) {
	io.Copy(c, c)
	c.Close()
}

// TestTLSHalfClose: through a TLS side, a client's close_notify reaches the
// server as EOF, and the whole answer comes back before the client's EOF.
func TestTLSHalfClose(t *testing.T) {
	for _, wrap := range []bool{false, true} {
		srv := testnet.Serve(t, func(c net.Conn) {
			in, _ := io.ReadAll(c)
			c.Write(bytes.ToUpper(in))
			c.Close()
		})
		scfg, ccfg := tlsConfigs(t)
		addr, done := relayTLS(t, srv, scfg, wrap, &bufPool)
		c, err := tls.Dial("tcp", addr, ccfg)
		if err != nil {
			t.Fatal(err)
		}
		big := bytes.Repeat([]byte("abc"), 200_000)
		go func() {
			c.Write(big)
			c.CloseWrite()
		}()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, bytes.ToUpper(big)) {
			t.Fatalf("wrap %v: got %d bytes, want %d", wrap, len(got), len(big))
		}
		if r := <-done; r.AToB != int64(len(big)) || r.BToA != int64(len(big)) {
			t.Errorf("wrap %v: counted %+v, want %d each way", wrap, r, len(big))
		}
	}
}

// TestTLSEcho: messages of every size, from one byte to several records,
// come back whole and in order.
func TestTLSEcho(t *testing.T) {
	scfg, ccfg := tlsConfigs(t)
	addr, _ := relayTLS(t, testnet.Serve(t, echo), scfg, true, &bufPool)
	c, err := tls.Dial("tcp", addr, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		msg := make([]byte, 1+rng.IntN(70_000))
		for j := range msg {
			msg[j] = byte(rng.Uint32())
		}
		go c.Write(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("message %d (%d bytes): %v", i, len(msg), err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("message %d (%d bytes) came back changed", i, len(msg))
		}
	}
}

// countingBufs lends 32 KiB buffers and counts those out.
type countingBufs struct {
	mu  sync.Mutex
	out int
}

func (p *countingBufs) Get() any {
	p.mu.Lock()
	p.out++
	p.mu.Unlock()
	b := make([]byte, 32<<10)
	return &b
}

func (p *countingBufs) Put(any) {
	p.mu.Lock()
	p.out--
	p.mu.Unlock()
}

func (p *countingBufs) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out
}

// TestIdlePipesHoldNoBuffers: opaque TCP connections that wait for their
// peers, through a TLS side and a plain one, hold no copy buffer.
func TestIdlePipesHoldNoBuffers(t *testing.T) {
	bp := &countingBufs{}
	scfg, ccfg := tlsConfigs(t)
	addr, _ := relayTLS(t, testnet.Serve(t, echo), scfg, true, bp)
	const conns = 8
	for range conns {
		c, err := tls.Dial("tcp", addr, ccfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := bytes.Repeat([]byte("x"), 50_000)
		go c.Write(msg)
		if _, err := io.ReadFull(c, msg); err != nil {
			t.Fatal(err)
		}
	}
	// Each copy gives its buffer back once its last write is done.
	deadline := time.Now().Add(10 * time.Second)
	for bp.count() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d buffers held by %d idle connections, want 0", bp.count(), conns)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
