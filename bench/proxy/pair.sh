#!/usr/bin/env bash
# pair.sh: two weft-proxy binaries, each between its own fortio client and a
# shared fortio echo server, loaded at the same time (one-hop HTTP/1.1,
# 1000 rps each, 8 connections, 1 KiB bodies). Both see the same machine at
# the same moment, so their difference stands out of the noise of a shared
# machine better than runs one after the other. PAIR_MODE=h2 or grpc loads
# HTTP/2 (h2c) or gRPC pings instead. It prints per binary the
# CPU (utime+stime) in seconds per 10,000 requests, the heap allocations
# per request (runtime MemStats, from the admin endpoint's pprof), and
# fortio's p50 and p99.
#
#   bench/proxy/pair.sh BINARY_A BINARY_B [SECONDS]
#
# Run it twice with the binaries swapped. Needs bin/fortio (make
# bin/fortio) and curl. Ports: PAIR_PORT (default 18280) and the nine
# after it.
set -euo pipefail
a=$1
b=$2
dur=${3:-12}
fortio=${FORTIO:-bin/fortio}
base=${PAIR_PORT:-18280}
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

mode=${PAIR_MODE:-h1}
backend=$base
case $mode in
h1 | h2) ;;
grpc) backend=$((base + 5)) ;;
*) echo "pair.sh: PAIR_MODE is h1, h2 or grpc" >&2 && exit 2 ;;
esac
"$fortio" server -loglevel Warning -http-port "$base" -grpc-port $((base + 5)) -redirect-port disabled \
	-udp-port disabled -tcp-port disabled >/dev/null 2>&1 &
pids+=($!)
start() { # binary, proxy port, admin port
	"$1" run -outbound "" -inbound "" -admin "127.0.0.1:$3" -pprof -opaque-ports "" -log-level warn \
		-static "127.0.0.1:$2=127.0.0.1:$backend" >/dev/null 2>&1 &
	pids+=($!)
}
start "$a" $((base + 1)) $((base + 2))
pa=${pids[-1]}
start "$b" $((base + 3)) $((base + 4))
pb=${pids[-1]}
sleep 0.6

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
mallocs() { curl -s "http://127.0.0.1:$1/debug/pprof/allocs?debug=1" | awk '/^# Mallocs = /{print $4}'; }
load() { # proxy port, seconds, json file or ""
	local json=() target=("http://127.0.0.1:$1/echo")
	[ -n "$3" ] && json=(-json "$3")
	case $mode in
	h2) target=(-h2 "${target[@]}") ;;
	grpc) target=(-grpc -ping "127.0.0.1:$1") ;;
	esac
	"$fortio" load -quiet -qps 1000 -c 8 -t "$2" -payload-size 1024 -r 0.00001 "${json[@]}" \
		"${target[@]}" >/dev/null 2>&1
}
load $((base + 1)) 1s ""
load $((base + 3)) 1s ""
ca0=$(cpu "$pa"); cb0=$(cpu "$pb"); ma0=$(mallocs $((base + 2))); mb0=$(mallocs $((base + 4)))
load $((base + 1)) "${dur}s" "$work/a.json" &
la=$!
load $((base + 3)) "${dur}s" "$work/b.json"
wait "$la"
ca1=$(cpu "$pa"); cb1=$(cpu "$pb"); ma1=$(mallocs $((base + 2))); mb1=$(mallocs $((base + 4)))

python3 - "$work" "$a" "$ca0" "$ca1" "$ma0" "$ma1" "$b" "$cb0" "$cb1" "$mb0" "$mb1" <<'PY'
import json, sys
work = sys.argv[1]
hz = 100  # clock ticks per second in /proc/PID/stat
for i, f in ((2, "a"), (7, "b")):
    name, c0, c1, m0, m1 = sys.argv[i:i + 5]
    d = json.load(open(f"{work}/{f}.json"))["DurationHistogram"]
    n = d["Count"]
    pct = {p["Percentile"]: p["Value"] * 1e6 for p in d["Percentiles"]}
    print("%-28s CPU %.3f s/10k requests  %.1f allocations/request  p50 %4.0f µs  p99 %5.0f µs  n %d" % (
        name, (float(c1) - float(c0)) / hz / n * 1e4, (float(m1) - float(m0)) / n, pct.get(50, 0), pct.get(99, 0), n))
PY
