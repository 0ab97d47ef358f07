# weft-proxy data-plane benchmark (issue 3). Not part of `make test`.
# Needs: haproxy, nginx and libnginx-mod-stream (apt-get install -y haproxy
# nginx libnginx-mod-stream); fortio is installed into bin/ on first use.
BENCH_PROXY_FLAGS ?=

bin/fortio:
	GOBIN=$(CURDIR)/bin go install fortio.org/fortio@$(FORTIO_VERSION)

.PHONY: bin/weft-proxy
bin/weft-proxy: ## Built as proxy/Dockerfile builds the image's binary, so the benchmark measures what ships.
	CGO_ENABLED=0 go build -tags grpcnotrace -trimpath -ldflags "-s -w" -o bin/weft-proxy ./proxy/cmd/weft-proxy

.PHONY: bench-proxy
bench-proxy: bin/fortio bin/weft-proxy ## Proxy vs direct vs haproxy vs nginx (needs haproxy nginx libnginx-mod-stream).
	go run ./bench/proxy -results bench/proxy/RESULTS.md $(BENCH_PROXY_FLAGS)

# A quick smoke run of the harness (one short round).
.PHONY: bench-proxy-quick
bench-proxy-quick: bin/fortio bin/weft-proxy ## One short round of bench-proxy.
	go run ./bench/proxy -rounds 1 -t 1s -results bench/out/proxy-quick.md $(BENCH_PROXY_FLAGS)

# Memory per idle connection (HTTP/1.1, HTTP/2 and TCP) and per open HTTP/2
# stream that waits for its next message; one hop and two hops with mTLS,
# weft against haproxy and nginx; its own section of RESULTS.md.
.PHONY: bench-proxy-idle
bench-proxy-idle: bin/fortio bin/weft-proxy ## Memory per idle connection and open HTTP/2 stream, weft vs haproxy vs nginx.
	go run ./bench/proxy -idle 500 -protos "HTTP/1.1,HTTP/2,HTTP/2 streams,TCP" -results bench/proxy/RESULTS.md $(BENCH_PROXY_FLAGS)
