package pipe

import (
	"bytes"
	"io"
	"net"
	"testing"
)

// relay accepts one connection on a listener and pipes it to target; it
// returns the address clients should dial and a channel with the result.
func relay(t *testing.T, target string, prefix []byte) (string, <-chan Result) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	done := make(chan Result, 1)
	go func() {
		a, err := ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", target)
		if err != nil {
			a.Close()
			return
		}
		done <- Pipe(a, b, prefix)
	}()
	return ln.Addr().String(), done
}

// TestHalfClose: a client that writes a request and then shuts its write side
// must still receive the whole answer, which the server only sends after
// seeing EOF.
func TestHalfClose(t *testing.T) {
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		c, err := srv.Accept()
		if err != nil {
			return
		}
		in, _ := io.ReadAll(c) // until the client's FIN arrives through the proxy
		c.Write(bytes.ToUpper(in))
		c.Close()
	}()
	addr, done := relay(t, srv.Addr().String(), []byte("pre-"))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := bytes.Repeat([]byte("abc"), 200_000)
	go func() {
		c.Write(big)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte("PRE-"), bytes.ToUpper(big)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d", len(got), len(want))
	}
	r := <-done
	if r.AToB != int64(len(want)) || r.BToA != int64(len(want)) {
		t.Errorf("counted %+v, want %d each way", r, len(want))
	}
}

// TestServerCloseFirst: a server-first protocol that closes ends the client's
// read side too.
func TestServerCloseFirst(t *testing.T) {
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		c, err := srv.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("220 smtp ready\r\n"))
		c.Close()
	}()
	addr, _ := relay(t, srv.Addr().String(), nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "220 smtp ready\r\n" {
		t.Fatalf("got %q, %v", got, err)
	}
}
