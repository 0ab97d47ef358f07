package origdst

import (
	"net"
	"net/netip"
	"testing"
)

func TestParse(t *testing.T) {
	v4 := []byte{2, 0, 0x1f, 0x90, 10, 244, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0}
	got, err := parse(v4, true)
	if err != nil || got != netip.MustParseAddrPort("10.244.1.7:8080") {
		t.Errorf("v4: %v %v", got, err)
	}
	v6 := make([]byte, 28)
	v6[0], v6[2], v6[3] = 10, 0x01, 0xbb
	copy(v6[8:24], netip.MustParseAddr("fd00::5").AsSlice())
	got, err = parse(v6, false)
	if err != nil || got != netip.MustParseAddrPort("[fd00::5]:443") {
		t.Errorf("v6: %v %v", got, err)
	}
}

// TestNotRedirected: a connection that no iptables rule redirected has no
// original destination to report, or reports its own local address.
func TestNotRedirected(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := Get(c.(*net.TCPConn))
	if err == nil && got.String() != ln.Addr().String() {
		t.Errorf("not redirected, got original destination %v, want error or %v", got, ln.Addr())
	}
}
