package coalesce

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/proxy/internal/testnet"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	return testnet.TCPPair(t)
}

// recorder is a net.Conn that records each Write it gets, and its Close.
// When gate is set, the first Write waits for it to close, having said on
// started that it began. With neverReads, a write deadline set meanwhile
// stands for a peer that never reads: the waiting Write and every later one
// time out.
type recorder struct {
	net.Conn
	mu      sync.Mutex
	writes  [][]byte
	fail    error
	gate    chan struct{}
	started chan struct{}
	once    sync.Once
	stuck   chan struct{} // closed by SetWriteDeadline when neverReads
	stuckMu sync.Once

	neverReads bool
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.gate != nil {
		timedOut := false
		r.once.Do(func() {
			close(r.started)
			select {
			case <-r.gate:
			case <-r.stuckCh():
				timedOut = true
			}
		})
		select {
		case <-r.stuckCh():
			timedOut = true
		default:
		}
		if timedOut {
			return 0, os.ErrDeadlineExceeded
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return 0, r.fail
	}
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func (r *recorder) stuckCh() chan struct{} {
	r.stuckMu.Do(func() { r.stuck = make(chan struct{}) })
	return r.stuck
}

func (r *recorder) SetWriteDeadline(t time.Time) error {
	if r.gate != nil && r.neverReads && !t.IsZero() {
		select {
		case <-r.gate: // released: the peer reads
		default:
			ch := r.stuckCh()
			select {
			case <-ch:
			default:
				close(ch)
			}
		}
	}
	return nil
}

func (r *recorder) SetDeadline(t time.Time) error { return r.SetWriteDeadline(t) }

func (r *recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, []byte("<closed>"))
	return nil
}

func (r *recorder) snapshot() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.writes...)
}

func (r *recorder) joined() []byte { return bytes.Join(r.snapshot(), nil) }

func TestWritesArriveInOrder(t *testing.T) {
	a, b := tcpPair(t)
	c := New(a)
	var want bytes.Buffer
	go func() {
		for i := range 5000 {
			msg := fmt.Appendf(nil, "frame %d;", i)
			if i%500 == 0 {
				msg = append(msg, bytes.Repeat([]byte{'x'}, maxBuffered)...) // larger than the buffer
			}
			want.Write(msg)
			if _, err := c.Write(msg); err != nil {
				t.Error(err)
				return
			}
		}
		c.Close()
	}()
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("read %d bytes, not the %d written in order", len(got), want.Len())
	}
}

func TestConcurrentWritesStayWhole(t *testing.T) {
	a, b := tcpPair(t)
	c := New(a)
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := fmt.Fprintf(c, "<%d:%d>", w, i); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	go func() {
		wg.Wait()
		c.Close()
	}()
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	for rec := range bytes.SplitSeq(got, []byte(">")) {
		if len(rec) == 0 {
			continue
		}
		var w, i int
		if _, err := fmt.Sscanf(string(rec), "<%d:%d", &w, &i); err != nil {
			t.Fatalf("torn record %q: %v", rec, err)
		}
		if i != next[w] {
			t.Fatalf("writer %d: record %d after %d", w, i, next[w]-1)
		}
		next[w]++
	}
	for w, n := range next {
		if n != each {
			t.Errorf("writer %d: %d records arrived, want %d", w, n, each)
		}
	}
}

// While a send is under way, the writes that follow are joined into one.
func TestWritesDuringASendAreJoined(t *testing.T) {
	r := &recorder{gate: make(chan struct{}), started: make(chan struct{})}
	c := New(r)
	c.Write([]byte("first;"))
	<-r.started // the flusher holds "first;" and is blocked sending it
	var want bytes.Buffer
	want.WriteString("first;")
	for i := range 100 {
		msg := fmt.Appendf(nil, "%d;", i)
		want.Write(msg)
		c.Write(msg)
	}
	close(r.gate)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	w := r.snapshot()
	if len(w) != 2 {
		t.Fatalf("%d sends for 101 writes, want 2 (the blocked one and the rest joined)", len(w))
	}
	if !bytes.Equal(r.joined(), want.Bytes()) {
		t.Fatalf("sent %q", r.joined())
	}
}

func TestSendErrorIsReturnedByTheNextWrite(t *testing.T) {
	boom := errors.New("boom")
	r := &recorder{fail: boom}
	c := New(r)
	if _, err := c.Write([]byte("lost")); err != nil {
		t.Fatalf("first write: %v (it is only buffered)", err)
	}
	if err := c.Flush(); !errors.Is(err, boom) {
		t.Fatalf("Flush: %v, want %v", err, boom)
	}
	if _, err := c.Write([]byte("more")); !errors.Is(err, boom) {
		t.Fatalf("Write after a failed send: %v, want %v", err, boom)
	}
	if n, err := c.Write(make([]byte, 2*maxBuffered)); n != 0 || !errors.Is(err, boom) {
		t.Fatalf("large Write after a failed send: %d, %v", n, err)
	}
}

func TestWriteAfterClose(t *testing.T) {
	a, _ := tcpPair(t)
	c := New(a)
	c.Close()
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v, want net.ErrClosed", err)
	}
}

func TestCloseSendsWhatIsBuffered(t *testing.T) {
	a, b := tcpPair(t)
	c := New(a)
	c.Write([]byte("goodbye"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "goodbye" {
		t.Fatalf("peer read %q, %v", got, err)
	}
}

// A peer that stops reading blocks a large write; Close still returns, and
// the blocked writer gets an error.
func TestCloseWithALargeWriteBlocked(t *testing.T) {
	a, _ := tcpPair(t)
	c := New(a)
	done := make(chan error, 1)
	go func() {
		chunk := make([]byte, 1<<20)
		for {
			if _, err := c.Write(chunk); err != nil {
				done <- err
				return
			}
		}
	}()
	// Wait for a send to be under way; with nobody reading, the socket
	// buffers fill and one of the sends blocks in the kernel.
	for c.wmu.TryLock() {
		c.wmu.Unlock()
		runtime.Gosched()
	}
	c.Close()
	if err := <-done; err == nil {
		t.Fatal("the blocked writer got no error")
	}
}

// Small writes pile up behind a flusher blocked on a peer that does not
// read; Close bounds the wait with a write deadline, gives up on them and
// says so.
func TestCloseWithBufferedWritesBlocked(t *testing.T) {
	r := &recorder{gate: make(chan struct{}), started: make(chan struct{}), neverReads: true}
	c := New(r)
	c.Write([]byte("first;"))
	<-r.started // the flusher is blocked sending "first;"
	for range 10 {
		if _, err := c.Write([]byte("more;")); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Close: %v, want the send's timeout", err)
	}
	if got := string(r.joined()); got != "<closed>" {
		t.Fatalf("the connection saw %q", got)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
}

// Close waits for a flusher that already took the buffer: the bytes go out
// before the connection closes.
func TestCloseWaitsForASendUnderWay(t *testing.T) {
	r := &recorder{gate: make(chan struct{}), started: make(chan struct{})}
	c := New(r)
	c.Write([]byte("last words"))
	<-r.started // the flusher took them and is sending
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	close(r.gate)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if got := string(r.joined()); got != "last words<closed>" {
		t.Fatalf("the connection saw %q, want the bytes then the close", got)
	}
}

// crypto/tls sends close_notify, then sets a write deadline in the past:
// the alert and what came before it still go out, later writes fail.
func TestPastWriteDeadlineSendsWhatCameBefore(t *testing.T) {
	a, b := tcpPair(t)
	c := New(a)
	c.Write([]byte("data;"))
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("alert;"))
	c.SetWriteDeadline(time.Now())
	if _, err := c.Write([]byte("late")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write after a past deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	c.SetWriteDeadline(time.Time{})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "data;alert;" {
		t.Fatalf("peer read %q, %v", got, err)
	}
}

// TLS on top: the handshake, records and close_notify all pass through.
func TestUnderTLS(t *testing.T) {
	a, b := tcpPair(t)
	cert := selfSigned(t)
	srv := tls.Server(New(b), &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	cli := tls.Client(New(a), &tls.Config{RootCAs: pool, ServerName: "coalesce.test", MinVersion: tls.VersionTLS13})
	const n = 200
	go func() {
		for i := range n {
			fmt.Fprintf(cli, "record %d;", i)
		}
		cli.Close() // sends close_notify
	}()
	got, err := io.ReadAll(srv) // io.EOF only after close_notify
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	for i := range n {
		fmt.Fprintf(&want, "record %d;", i)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("server read %d bytes, want %d", len(got), want.Len())
	}
	srv.Close()
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		DNSNames:     []string{"coalesce.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func TestCloseWriteSendsThenHalfCloses(t *testing.T) {
	a, b := tcpPair(t)
	c := New(a)
	c.Write([]byte("request"))
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "request" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	// The other direction still works.
	if _, err := b.Write([]byte("response")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "response" {
		t.Fatalf("read back %q, %v", buf, err)
	}
}

func TestDirectWritesGoStraight(t *testing.T) {
	r := &recorder{}
	c := New(r)
	c.Write([]byte("handshake;"))
	c.Direct()
	if got := r.joined(); string(got) != "handshake;" {
		t.Fatalf("Direct did not send the buffered bytes first: %q", got)
	}
	for i := range 10 {
		c.Write(fmt.Appendf(nil, "%d;", i))
	}
	if w := r.snapshot(); len(w) != 11 {
		t.Fatalf("%d sends after Direct for 1+10 writes, want 11", len(w))
	}
}
