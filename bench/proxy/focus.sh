#!/usr/bin/env bash
# focus.sh: one weft-proxy between fortio and a fortio echo server, the shape
# of bench/proxy's one-hop HTTP/1.1 cell, for iterating on memory and CPU
# (issue 3) without the whole matrix. It prints, in KiB, VmRSS and RssAnon
# 0.6 s after start ("idle", as bench/proxy measures it), after a single
# request, and after the load; and CPU as seconds (utime+stime) per 10,000
# requests, which noise on a shared machine moves less than latency.
#
#   bench/proxy/focus.sh BINARY [SECONDS] [weft-proxy run flags...]
#   e.g. bench/proxy/focus.sh bin/weft-proxy 12 -gc-percent 100
#
# Needs bin/fortio (make bin/fortio). Ports: FOCUS_PORT (default 18180) for
# the backend and FOCUS_PORT+10 for the proxy.
set -euo pipefail
bin=$1
dur=${2:-10}
shift $(( $# > 1 ? 2 : 1 ))
fortio=${FORTIO:-bin/fortio}
bport=${FOCUS_PORT:-18180}
pport=$((bport + 10))
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

"$fortio" server -loglevel Warning -http-port "$bport" -grpc-port disabled -redirect-port disabled \
	-udp-port disabled -tcp-port disabled >"$work/backend.log" 2>&1 &
pids+=($!)
"$bin" run -outbound "" -inbound "" -admin "" -opaque-ports "" -log-level warn \
	-static "127.0.0.1:$pport=127.0.0.1:$bport" "$@" >"$work/weft.log" 2>&1 &
weft=$!
pids+=("$weft")

mem() { awk '/^VmRSS/{r=$2} /^RssAnon/{a=$2} END{printf "rss %d anon %d", r, a}' "/proc/$weft/status"; }
cpu() { awk '{print $14 + $15}' "/proc/$weft/stat"; }

sleep 0.6
idle=$(mem)
curl -sf -o /dev/null -d ping "http://127.0.0.1:$pport/echo"
sleep 0.2
one=$(mem)
c0=$(cpu)
"$fortio" load -quiet -qps 1000 -c 8 -t "${dur}s" -payload-size 1024 -r 0.00001 -json "$work/load.json" \
	"http://127.0.0.1:$pport/echo" >"$work/load.log" 2>&1
c1=$(cpu)
loaded=$(mem)
hz=$(getconf CLK_TCK)
python3 - "$work/load.json" "$c0" "$c1" "$hz" "$idle" "$one" "$loaded" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
c0, c1, hz = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
n = d["DurationHistogram"]["Count"]
pct = {p["Percentile"]: p["Value"] * 1e6 for p in d["DurationHistogram"]["Percentiles"]}
print("idle %s | after 1 request %s | loaded %s | %d requests, CPU %.3f s per 10k | p50 %.0f p99 %.0f us"
      % (sys.argv[5], sys.argv[6], sys.argv[7], n, (c1 - c0) / hz / n * 1e4, pct.get(50, 0), pct.get(99, 0)))
PY
