package rawtcp

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/proxy/internal/testnet"
)

// pair returns both ends of a loopback TCP connection, wrapped.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	c, s := testnet.TCPPair(t)
	client, server = Wrap(c), Wrap(s)
	if _, ok := client.(*Conn); !ok {
		t.Fatalf("Wrap(%T) = %T, want *Conn", c, client)
	}
	return client, server
}

func TestReadWrite(t *testing.T) {
	c, s := pair(t)
	for _, msg := range []string{"a", "hello, proxy", string(bytes.Repeat([]byte("x"), 4000))} {
		if n, err := c.Write([]byte(msg)); err != nil || n != len(msg) {
			t.Fatalf("Write = %d, %v", n, err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(s, got); err != nil {
			t.Fatal(err)
		}
		if string(got) != msg {
			t.Fatalf("read %q, want %q", got, msg)
		}
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("zero-length Read = %d, %v; want 0, nil", n, err)
	}
	if n, err := c.Write(nil); n != 0 || err != nil {
		t.Fatalf("zero-length Write = %d, %v; want 0, nil", n, err)
	}
}

// TestLargeTransfer makes both sides wait in the poller: the writer on a full
// socket buffer, the reader on an empty one.
func TestLargeTransfer(t *testing.T) {
	c, s := pair(t)
	want := make([]byte, 16<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	errc := make(chan error, 1)
	go func() {
		n, err := c.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		if err == nil {
			err = c.(*Conn).CloseWrite()
		}
		errc <- err
	}()
	got, err := testnet.ReadAll(s, 3000) // small reads: many rounds through the poller
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes that differ from the %d written", len(got), len(want))
	}
}

func TestHalfClose(t *testing.T) {
	c, s := pair(t)
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := c.(*Conn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "request" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	// The other direction still works after the client's FIN.
	if _, err := s.Write([]byte("response")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	got, err = io.ReadAll(c)
	if err != nil || string(got) != "response" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
}

func TestDeadline(t *testing.T) {
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	n, err := c.Read(make([]byte, 10))
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %d, %v; want a deadline error", n, err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%v is not a net.Error timeout", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" || oe.Net != "tcp" || oe.Addr == nil || oe.Source == nil {
		t.Fatalf("%#v: want an OpError as package net makes for a read", err)
	}
	// A deadline in the past wakes a Read already waiting.
	errc := make(chan error, 1)
	c.SetReadDeadline(time.Time{})
	go func() {
		_, err := c.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	c.SetReadDeadline(time.Unix(1, 0))
	if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("waiting Read = %v; want a deadline error", err)
	}
	c.SetReadDeadline(time.Time{})
	c.SetWriteDeadline(time.Unix(1, 0))
	if _, err := c.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write past its deadline = %v", err)
	}
}

func TestCloseWakesRead(t *testing.T) {
	c, _ := pair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	c.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read on a closed connection = %v; want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write on a closed connection = %v; want net.ErrClosed", err)
	}
}

func TestWriteToResetPeer(t *testing.T) {
	c, s := pair(t)
	s.(*Conn).SetLinger(0)
	s.Close() // RST
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = c.Write(make([]byte, 64<<10))
		time.Sleep(time.Millisecond)
	}
	var se *os.SyscallError
	if !errors.As(err, &se) || (!errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE)) {
		t.Fatalf("Write to a reset peer = %v; want ECONNRESET or EPIPE as an os.SyscallError", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("%#v: want an OpError for a write", err)
	}
}

func TestUnwrap(t *testing.T) {
	c, _ := pair(t)
	tc, ok := TCP(c)
	if !ok || tc != c.(*Conn).TCPConn {
		t.Fatalf("TCP(wrapped) = %v, %v", tc, ok)
	}
	if got := Plain(c); got != net.Conn(tc) {
		t.Fatalf("Plain(wrapped) = %T", got)
	}
	if got, ok := TCP(tc); !ok || got != tc {
		t.Fatalf("TCP(plain) = %v, %v", got, ok)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a || Plain(a) != a {
		t.Fatal("a connection that is not TCP must come back unchanged")
	}
	if _, ok := TCP(a); ok {
		t.Fatal("TCP(net.Pipe) reported a TCP connection")
	}
}

// A socket someone made blocking stays on package net's path, where a
// blocking read parks only its own thread.
func TestBlockingSocketNotWrapped(t *testing.T) {
	c, _ := pair(t)
	tc := c.(*Conn).TCPConn
	rc, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) {
		if err := syscall.SetNonblock(int(fd), false); err != nil {
			t.Fatal(err)
		}
	})
	if w := Wrap(tc); w != net.Conn(tc) {
		t.Fatalf("Wrap of a blocking socket = %T, want the connection unchanged", w)
	}
}

func TestPeekIdle(t *testing.T) {
	c, s := pair(t)
	rc, err := c.(*Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var scratch [1]byte
	idle := func() bool {
		var ok bool
		if err := rc.Read(func(fd uintptr) bool { ok = PeekIdle(fd, scratch[:]); return true }); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	// eventually waits for what the peer did to reach this socket; loopback
	// is quick, the bound only keeps a broken test from hanging.
	eventually := func(want bool) {
		t.Helper()
		for i := 0; i < 500; i++ {
			if idle() == want {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		t.Fatalf("PeekIdle never became %v", want)
	}
	if !idle() {
		t.Fatal("an idle connection is not idle")
	}
	s.Write([]byte("unasked"))
	eventually(false)
	// Peeking took nothing from the socket.
	got := make([]byte, 7)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "unasked" {
		t.Fatalf("read %q, %v after peeking", got, err)
	}
	eventually(true)
	s.Close()
	eventually(false) // end of stream
}

func TestZeroLengthOnClosed(t *testing.T) {
	c, _ := pair(t)
	c.Close()
	if _, err := c.Read(nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("zero-length Read on a closed connection = %v; want net.ErrClosed", err)
	}
	if _, err := c.Write(nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("zero-length Write on a closed connection = %v; want net.ErrClosed", err)
	}
}

// TestQuiet: the quiet time of a socket grows while nothing passes, and
// falls back when data is received or sent.
func TestQuiet(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const wait = 300 * time.Millisecond
	time.Sleep(wait)
	before, ok := Quiet(s)
	// The kernel counts in jiffies (1 to 10 ms); the lower bound is all
	// that is checked.
	if !ok || before < wait-20*time.Millisecond {
		t.Fatalf("quiet %v (ok %v) after %v without data", before, ok, wait)
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	after, ok := Quiet(s)
	if !ok || after >= before {
		t.Fatalf("quiet %v after receiving, %v before", after, before)
	}
	if _, ok := Quiet(struct{ net.Conn }{s}); ok {
		t.Error("Quiet of a connection that is not TCP reported a time")
	}
}
