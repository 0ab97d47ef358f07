# Inbound authorization benchmark (issue 5). Not part of `make test`.
BENCH_AUTHZ_FLAGS ?=

.PHONY: bench-authz
bench-authz: ## Authorization decision cost (1/100/1,000 rules) and inbound latency with and without 100 policies.
	go run ./bench/authz $(BENCH_AUTHZ_FLAGS)
