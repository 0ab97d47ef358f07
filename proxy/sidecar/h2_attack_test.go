package sidecar

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

// h2Attacker speaks raw HTTP/2 (prior knowledge) to the inbound listener.
type h2Attacker struct {
	c      net.Conn
	mu     sync.Mutex // serialises frame writes (the reader acks SETTINGS)
	fr     *http2.Framer
	enc    *hpack.Encoder
	hbuf   bytes.Buffer
	goaway atomic.Bool
	rsts   atomic.Int64
	// readDone is closed when the proxy closed the connection (or sent
	// GOAWAY and then closed it).
	readDone chan struct{}
	resp     chan h2Event
}

// h2Event is a frame the proxy sent, copied out of the reader (frames are
// reused by the framer).
type h2Event struct {
	rst    bool
	status string // of a HEADERS frame
	ended  bool
}

func dialH2(t *testing.T, addr string) *h2Attacker {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// A safety net against a hang, not a measurement.
	c.SetDeadline(time.Now().Add(60 * time.Second))
	a := &h2Attacker{c: c, fr: http2.NewFramer(c, c), readDone: make(chan struct{}), resp: make(chan h2Event, 1024)}
	a.enc = hpack.NewEncoder(&a.hbuf)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := a.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var status string
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			status = f.Value
		}
	})
	go func() {
		defer close(a.readDone)
		for {
			f, err := a.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.GoAwayFrame:
				a.goaway.Store(true)
			case *http2.RSTStreamFrame:
				a.rsts.Add(1)
				select {
				case a.resp <- h2Event{rst: true}:
				default:
				}
			case *http2.SettingsFrame:
				if !f.IsAck() {
					a.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
				}
			case *http2.HeadersFrame:
				status = ""
				if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
					return
				}
				select {
				case a.resp <- h2Event{status: status, ended: f.StreamEnded()}:
				default:
				}
			}
		}
	}()
	return a
}

func (a *h2Attacker) write(f func(*http2.Framer) error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return f(a.fr)
}

func (a *h2Attacker) block(path string, extra ...string) []byte {
	a.hbuf.Reset()
	a.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
	a.enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "http"})
	a.enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "backend"})
	a.enc.WriteField(hpack.HeaderField{Name: ":path", Value: path})
	for i := 0; i+1 < len(extra); i += 2 {
		a.enc.WriteField(hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return bytes.Clone(a.hbuf.Bytes())
}

// slowApp holds every request until its client goes away, and records the
// peak number it held at once.
type slowApp struct {
	inflight, peak, total atomic.Int64
}

func (s *slowApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ok" {
		io.WriteString(w, "ok")
		return
	}
	s.total.Add(1)
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for {
		p := s.peak.Load()
		if n <= p || s.peak.CompareAndSwap(p, n) {
			break
		}
	}
	<-r.Context().Done()
}

// okThroughInbound checks that another client is still served.
func okThroughInbound(t *testing.T, addr string) {
	t.Helper()
	res, err := h2cClient().Get("http://" + addr + "/ok")
	if err != nil {
		t.Fatalf("listener stopped serving other clients: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(b) != "ok" {
		t.Fatalf("other client got %d %q", res.StatusCode, b)
	}
}

// TestH2RapidReset (CVE-2023-44487): a client opening and resetting streams
// as fast as it can never has more requests running at the application than
// the stream limit, is cut off, and other clients keep being served.
func TestH2RapidReset(t *testing.T) {
	app := &slowApp{}
	addr := plainInbound(t, serve(t, app), inboundSnap(1, "", meshconfig.DefaultAllow)).Addr("inbound")
	a := dialH2(t, addr)
	const streams = 20000
	var sent int
	for i := range streams {
		id := uint32(2*i + 1)
		err := a.write(func(fr *http2.Framer) error {
			return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: a.block("/slow"), EndHeaders: true, EndStream: true})
		})
		if err == nil {
			err = a.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeCancel) })
		}
		if err != nil {
			break // the proxy closed the connection
		}
		sent++
	}
	okThroughInbound(t, addr)
	a.c.Close()
	<-a.readDone
	const limit = 250 // the server's SETTINGS_MAX_CONCURRENT_STREAMS
	if p := app.peak.Load(); p > limit {
		t.Errorf("%d requests ran at once at the application, limit %d", p, limit)
	}
	t.Logf("sent %d stream+reset pairs; application saw %d requests, at most %d at once; GOAWAY %v", sent, app.total.Load(), app.peak.Load(), a.goaway.Load())
}

// TestH2ContinuationFlood (CVE-2024-27316, CVE-2023-45288): a header block
// that never ends is cut off after a bounded number of bytes, never reaches
// the application, and other clients keep being served.
func TestH2ContinuationFlood(t *testing.T) {
	app := &slowApp{}
	addr := plainInbound(t, serve(t, app), inboundSnap(1, "", meshconfig.DefaultAllow)).Addr("inbound")
	a := dialH2(t, addr)
	if err := a.write(func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: a.block("/slow")})
	}); err != nil {
		t.Fatal(err)
	}
	// Each CONTINUATION adds a literal header field of ~16 KiB.
	a.hbuf.Reset()
	a.enc.WriteField(hpack.HeaderField{Name: "x-flood", Value: strings.Repeat("a", 16000)})
	frag := bytes.Clone(a.hbuf.Bytes())
	const budget = 64 << 20
	sent := 0
	var werr error
	for sent < budget {
		if werr = a.write(func(fr *http2.Framer) error { return fr.WriteContinuation(1, false, frag) }); werr != nil {
			break
		}
		sent += len(frag)
		select {
		case <-a.readDone:
			werr = errors.New("closed by proxy")
		default:
		}
		if werr != nil {
			break
		}
	}
	if werr == nil {
		t.Fatalf("proxy accepted %d MiB of one header block", sent>>20)
	}
	<-a.readDone
	if n := app.total.Load(); n != 0 {
		t.Errorf("application received %d requests", n)
	}
	okThroughInbound(t, addr)
	t.Logf("cut off after %d KiB of CONTINUATION frames: %v (GOAWAY %v)", sent>>10, werr, a.goaway.Load())
}

// TestH2MalformedRequests: requests that HTTP/2 forbids are refused per
// stream (RST_STREAM or a 4xx), never reach the application, and the
// connection keeps serving valid streams.
func TestH2MalformedRequests(t *testing.T) {
	rec := &recorder{}
	addr := plainInbound(t, serve(t, rec), inboundSnap(1, "", meshconfig.DefaultAllow, denyPaths("/admin"))).Addr("inbound")
	cases := map[string][]string{
		"connection header":      {"connection", "keep-alive"},
		"transfer-encoding":      {"transfer-encoding", "chunked"},
		"upgrade header":         {"upgrade", "h2c"},
		"te other than trailers": {"te", "gzip"},
		"uppercase name":         {"X-Upper", "a"},
		"host disagrees":         {"host", "admin.internal"},
	}
	for name, hdr := range cases {
		t.Run(name, func(t *testing.T) {
			a := dialH2(t, addr)
			if err := a.write(func(fr *http2.Framer) error {
				return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: a.block("/x", hdr...), EndHeaders: true, EndStream: true})
			}); err != nil {
				t.Fatal(err)
			}
			select {
			case e := <-a.resp:
				if !e.rst && e.status != "400" && e.status != "431" {
					t.Errorf("answered %s", e.status)
				}
			case <-a.readDone:
			}
		})
	}
	t.Run("content-length mismatch", func(t *testing.T) {
		// The request has started towards the app when the short body is
		// found; it must fail there and never be answered as a success.
		a := dialH2(t, addr)
		a.write(func(fr *http2.Framer) error {
			return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: a.block("/cl", "content-length", "10"), EndHeaders: true})
		})
		a.write(func(fr *http2.Framer) error { return fr.WriteData(1, true, []byte("abc")) })
		select {
		case e := <-a.resp:
			if !e.rst && !strings.HasPrefix(e.status, "4") && !strings.HasPrefix(e.status, "5") {
				t.Errorf("short body answered %s", e.status)
			}
		case <-a.readDone:
		}
	})
	t.Run("encoded path", func(t *testing.T) {
		a := dialH2(t, addr)
		a.write(func(fr *http2.Framer) error {
			return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: a.block("/%2e%2e/%61dmin"), EndHeaders: true, EndStream: true})
		})
		if e := <-a.resp; e.status != "403" {
			t.Errorf("got %+v", e)
		}
	})
	for _, u := range rec.uris() {
		if u != "/cl" {
			t.Errorf("application received %q", u)
		}
	}
}
