package sidecar

import (
	"time"

	"github.com/weftmesh/weft/proxy/internal/rawtcp"
)

// sweepIdle closes, until Shutdown, the opaque TCP connections and upgraded
// tunnels that carried no data either way for d. HTTP connections between
// requests are closed by their servers' idle timeout; a tunnel has no
// requests, and without this a peer that vanished without a FIN or RST (a
// node lost, a NAT entry dropped) would hold its connection, both sockets
// and the connection cap's slot forever.
//
// A tunnel stalled by backpressure (its receiver stopped reading, the
// sender's window is zero) carries no data either, and is closed too, as
// Envoy's TCP proxy closes it.
//
// One sweep for all connections, reading the kernel's own record of each
// socket's last data (rawtcp.Quiet), instead of a deadline or timer per
// connection: nothing is added to the data path, and an idle connection
// costs nothing more.
func (p *Proxy) sweepIdle(d time.Duration) {
	t := time.NewTicker(sweepEvery(d))
	defer t.Stop()
	for {
		select {
		case <-p.stopSweep:
			return
		case <-t.C:
		}
		for _, c := range p.conns.quietTunnels(d, rawtcp.Quiet) {
			p.log.Debug("Idle tunnel closed", "dir", c.info.dir, "client", c.RemoteAddr().String(), "idle_timeout", d.String())
			p.metrics.IdleClosed(c.info.dir)
			// The socket: the pipe or the tunnel's copy sees the error
			// and closes its other side.
			c.Conn.Close()
		}
	}
}

// sweepEvery is how often sweepIdle looks: a tenth of the timeout, so that
// a connection is closed at most 10% late, and at least once a minute.
func sweepEvery(d time.Duration) time.Duration {
	return max(min(d/10, time.Minute), time.Millisecond)
}
