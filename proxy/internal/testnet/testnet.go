// Package testnet holds helpers for tests that need real sockets.
package testnet

import (
	"bytes"
	"io"
	"net"
	"testing"
)

// TCPPair returns the two ends of a loopback TCP connection; both are closed
// when the test ends.
func TCPPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- accepted{c, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a.err != nil {
		c.Close()
		t.Fatal(a.err)
	}
	t.Cleanup(func() {
		c.Close()
		a.c.Close()
	})
	return c.(*net.TCPConn), a.c.(*net.TCPConn)
}

// ReadAll reads r to its end (io.EOF) through a buffer of size bytes, so
// that a large transfer takes many reads; it returns what it read and the
// first other error.
func ReadAll(r io.Reader, size int) ([]byte, error) {
	var got bytes.Buffer
	buf := make([]byte, size)
	for {
		n, err := r.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			return got.Bytes(), nil
		}
		if err != nil {
			return got.Bytes(), err
		}
	}
}

// Serve accepts connections on a new loopback listener, closed when the
// test ends, and runs handle on each in a goroutine of its own. It returns
// the listener's address.
func Serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
	return ln.Addr().String()
}
