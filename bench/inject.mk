# Sidecar injector admission-latency benchmark (issue 7). Not part of
# `make test`. Needs the envtest binaries (make envtest-assets).
BENCH_INJECT_FLAGS ?=

.PHONY: bench-inject
bench-inject: envtest-assets ## Injector vs no-op webhook, in process and at 200 pods/s through the API server.
	go run ./bench/inject $(BENCH_INJECT_FLAGS)

# A quick smoke run of the harness (one short round).
.PHONY: bench-inject-quick
bench-inject-quick: envtest-assets ## One short round of bench-inject.
	go run ./bench/inject -rounds 1 -t 1s -n 2000 -results bench/out/inject-quick.md $(BENCH_INJECT_FLAGS)
