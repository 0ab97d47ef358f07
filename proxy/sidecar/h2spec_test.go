package sidecar

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/proxy/identity"
	"github.com/weftmesh/weft/proxy/internal/testnet"
)

// h2specVersion is the Makefile's H2SPEC_VERSION.
const h2specVersion = "v2.2.1"

// h2specExpectedFailures are h2spec cases the inbound listener fails, each
// with its reason. They come from Go's HTTP/2 server, which the proxy uses
// unchanged; every other case must pass.
var h2specExpectedFailures = map[string]string{
	"3.5. HTTP/2 Connection Preface: Sends invalid connection preface": "the listener is transparent: bytes that are neither HTTP/1 nor the " +
		"HTTP/2 preface are opaque TCP (after authorization) and go to the application, whose answer h2spec sees",
	"6.5.3. Settings Synchronization: Sends multiple values of SETTINGS_INITIAL_WINDOW_SIZE": "Go's server acknowledges, then " +
		"closes the connection before answering the request h2spec sends",
	"8.1.2.2. Connection-Specific Header Fields: Sends a HEADERS frame that contains the connection-specific header field": "Go's " +
		"server answers 400 instead of RST_STREAM(PROTOCOL_ERROR); the request never reaches the app (TestH2MalformedRequests)",
	"8.1.2.2. Connection-Specific Header Fields: Sends a HEADERS frame that contains the TE header field with any value other than \"trailers\"": "same as above",
}

// h2specExpectedFailuresTLS are the cases that fail through the mTLS relay:
// the same as over h2c, except the preface case, which ALPN h2 sends straight
// to Go's HTTP/2 server (it answers GOAWAY).
var h2specExpectedFailuresTLS = func() map[string]string {
	m := map[string]string{}
	for k, v := range h2specExpectedFailures {
		if !strings.HasPrefix(k, "3.5.") {
			m[k] = v
		}
	}
	return m
}()

// h2specBinary finds h2spec: $H2SPEC, then bin/h2spec, then a build of the
// pinned version from the Go module proxy into bin/. It skips the test when
// none is available.
func h2specBinary(t *testing.T) string {
	if p := os.Getenv("H2SPEC"); p != "" {
		return p
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Skipf("h2spec: go env: %v", err)
	}
	bin := filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), "bin")
	p := filepath.Join(bin, "h2spec")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	cmd := exec.Command("go", "install", "github.com/summerwind/h2spec/cmd/h2spec@"+h2specVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+bin)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("h2spec %s is not available from the module proxy (set H2SPEC=/path/to/h2spec): %v\n%s", h2specVersion, err, b)
	}
	return p
}

type junitReport struct {
	Suites []struct {
		Name  string `xml:"name,attr"`
		Cases []struct {
			Package string    `xml:"package,attr"`
			Name    string    `xml:"classname,attr"`
			Failure *struct{} `xml:"failure"`
			Error   *struct{} `xml:"error"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// TestH2Spec runs h2spec against the inbound listener over h2c (prior
// knowledge), and over mTLS through a relay that presents a mesh client
// certificate (h2spec cannot), so that the TLS side's HTTP/2 is checked too.
func TestH2Spec(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("linux only")
	}
	if testing.Short() {
		t.Skip("h2spec takes about a minute (its own waits for frames that never come)")
	}
	h2spec := h2specBinary(t)
	app := serve(t, &recorder{})
	t.Run("h2c", func(t *testing.T) {
		p := plainInbound(t, app, inboundSnap(appPort(t, app), "", meshconfig.DefaultAllow))
		runH2Spec(t, h2spec, p.Addr("inbound"), h2specExpectedFailures)
	})
	t.Run("mTLS", func(t *testing.T) {
		k := newPKI(t)
		ss, _, _ := k.source(t, serverID)
		cs, _, _ := k.source(t, clientID)
		snap := inboundSnap(appPort(t, app), "", meshconfig.DefaultAllow)
		snap.MTLSMode = meshconfig.MTLSStrict
		p := startProxy(t, Config{InboundAddr: "127.0.0.1:0", InboundTarget: app, Identity: ss}, snap)
		relay := mtlsRelay(t, p.Addr("inbound"), cs.ClientConfig(spiffeid.RequireFromString(serverID), identity.ALPNH2))
		runH2Spec(t, h2spec, relay, h2specExpectedFailuresTLS)
	})
}

// mtlsRelay accepts plaintext connections and relays their bytes over mTLS
// to addr, as a peer proxy would.
func mtlsRelay(t *testing.T, addr string, cfg *tls.Config) string {
	return testnet.Serve(t, func(c net.Conn) {
		defer c.Close()
		up, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			return
		}
		defer up.Close()
		// h2spec watches for the server closing the connection: a close
		// from the proxy closes the client side at once.
		go func() { io.Copy(up, c); up.CloseWrite() }()
		io.Copy(c, up)
	})
}

func runH2Spec(t *testing.T, h2spec, addr string, expected map[string]string) {
	host, port, _ := net.SplitHostPort(addr)
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, _ := exec.CommandContext(ctx, h2spec, "-h", host, "-p", port, "-o", "10", "-j", report).CombinedOutput()
	raw, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("h2spec wrote no report: %v\n%s", err, out)
	}
	var rep junitReport
	if err := xml.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	var failed []string
	total := 0
	for _, s := range rep.Suites {
		for _, c := range s.Cases {
			total++
			if c.Failure != nil || c.Error != nil {
				failed = append(failed, s.Name+": "+c.Name)
			}
		}
	}
	sort.Strings(failed)
	if total == 0 {
		t.Fatalf("h2spec ran no case:\n%s", out)
	}
	for _, f := range failed {
		if _, ok := expected[f]; !ok {
			t.Errorf("h2spec: unexpected failure %q", f)
		}
	}
	for f := range expected {
		if !contains(failed, f) {
			t.Errorf("h2spec: %q passes now: remove it from the expected failures", f)
		}
	}
	t.Logf("h2spec: %d cases, %d failed (%d expected)", total, len(failed), len(expected))
	if t.Failed() {
		t.Logf("h2spec output:\n%s", out)
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
