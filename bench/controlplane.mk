# Control-plane config server benchmark (issue 6). Not part of `make test`.
# Starts a local API server (envtest binaries), a weft-controlplane process
# and N fake proxies; writes bench/controlplane/RESULTS.md.
BENCH_CONTROLPLANE_FLAGS ?=

.PHONY: bin/weft-controlplane
bin/weft-controlplane:
	go build -tags grpcnotrace -trimpath -ldflags "-s -w" -o bin/weft-controlplane ./cmd/controlplane

.PHONY: bench-controlplane
bench-controlplane: envtest-assets bin/weft-controlplane ## Config API: route change → ack latency with 1000 proxies, control-plane RSS/CPU.
	go run ./bench/controlplane $(BENCH_CONTROLPLANE_FLAGS)
