package sockmark

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]uint32{"": 0, "8450": 8450, "0x2102": 0x2102, "0xffffffff": 0xffffffff} {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"-1", "0x100000000", "mark", "1.5"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
}

func TestControlMarksTheSocket(t *testing.T) {
	if Control(0) != nil {
		t.Error("Control(0) is not nil")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Control: Control(0x2102)}
	c, err := d.Dial("tcp", ln.Addr().String())
	if errors.Is(err, syscall.EPERM) && os.Geteuid() != 0 {
		t.Skip("setting SO_MARK needs CAP_NET_ADMIN")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	var gerr error
	_ = rc.Control(func(fd uintptr) { mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) })
	if gerr != nil || mark != 0x2102 {
		t.Errorf("SO_MARK = %#x, %v; want 0x2102", mark, gerr)
	}
}
