package pipe

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/weftmesh/weft/proxy/internal/testnet"
)

// TestSpliceCopy moves 16 MiB from one connection to another, with a reader
// slow enough that both the socket to read and the socket to write make the
// copy wait in the poller.
func TestSpliceCopy(t *testing.T) {
	sender, src := testnet.TCPPair(t)
	dst, receiver := testnet.TCPPair(t)
	want := make([]byte, 16<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	go func() {
		sender.Write(want)
		sender.CloseWrite()
	}()
	type result struct {
		n       int64
		handled bool
		err     error
	}
	done := make(chan result, 1)
	go func() {
		n, handled, err := spliceCopy(dst, src)
		dst.CloseWrite()
		done <- result{n, handled, err}
	}()
	got, err := testnet.ReadAll(receiver, 5000)
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if !r.handled || r.err != nil || r.n != int64(len(want)) {
		t.Fatalf("spliceCopy = %d, handled %v, %v; want %d, true, nil", r.n, r.handled, r.err, len(want))
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("received %d bytes that differ from the %d sent", len(got), len(want))
	}
}

// TestSpliceCopyClosed: closing the connection a copy waits on ends the copy
// with net.ErrClosed in a read OpError, as io.Copy would.
func TestSpliceCopyClosed(t *testing.T) {
	_, src := testnet.TCPPair(t)
	dst, _ := testnet.TCPPair(t)
	done := make(chan error, 1)
	go func() {
		_, _, err := spliceCopy(dst, src)
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	src.Close()
	err := <-done
	var oe *net.OpError
	if !errors.Is(err, net.ErrClosed) || !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("spliceCopy after Close = %v; want net.ErrClosed in a read OpError", err)
	}
}

// TestSpliceCopyPeerReset: a destination whose peer reset ends the copy
// with a write error.
func TestSpliceCopyPeerReset(t *testing.T) {
	sender, src := testnet.TCPPair(t)
	dst, receiver := testnet.TCPPair(t)
	receiver.SetLinger(0)
	receiver.Close() // RST
	go func() {
		chunk := make([]byte, 64<<10)
		for i := 0; i < 200; i++ {
			if _, err := sender.Write(chunk); err != nil {
				return
			}
		}
		sender.CloseWrite()
	}()
	n, handled, err := spliceCopy(dst, src)
	var oe *net.OpError
	if !handled || err == nil || !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("spliceCopy to a reset peer = %d, handled %v, %v; want a write OpError", n, handled, err)
	}
}

// TestSpliceIdleHoldsNoPipe: a copy waiting for its socket holds no pipe;
// one that moves bytes takes one and gives it back.
func TestSpliceIdleHoldsNoPipe(t *testing.T) {
	// Copies of earlier tests end once their peers have closed.
	idle := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for pipes.inUse() > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d pipes held", what, pipes.inUse())
			}
			time.Sleep(time.Millisecond)
		}
	}
	idle("before the test")
	sender, src := testnet.TCPPair(t)
	dst, receiver := testnet.TCPPair(t)
	done := make(chan error, 1)
	go func() {
		_, _, err := spliceCopy(dst, src)
		done <- err
	}()
	msg := bytes.Repeat([]byte("m"), 3000)
	got := make([]byte, len(msg))
	for range 3 {
		if _, err := sender.Write(msg); err != nil {
			t.Fatal(err)
		}
		receiver.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(receiver, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("read %v", err)
		}
		idle("while the copy waits")
	}
	sender.CloseWrite()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	idle("after the copy")
}
