# Mesh-upgrade benchmark (issue 8). Not part of `make test`.
# Starts a local API server and etcd (envtest binaries), kube-controller-manager,
# kwok playing the kubelet of a few fake nodes, and the real operator binary;
# upgrades N meshed Deployments and writes bench/upgrade/RESULTS.md.
BENCH_UPGRADE_FLAGS ?=

$(BIN)/kwok-$(KWOK_VERSION):
	@mkdir -p $(BIN)/.kwok-$(KWOK_VERSION)
	GOBIN=$(BIN)/.kwok-$(KWOK_VERSION) go install sigs.k8s.io/kwok/cmd/kwok@$(KWOK_VERSION)
	mv $(BIN)/.kwok-$(KWOK_VERSION)/kwok $@
	rmdir $(BIN)/.kwok-$(KWOK_VERSION)

.PHONY: kwok
kwok: $(BIN)/kwok-$(KWOK_VERSION) ## Install kwok (fake kubelets) into bin/, pinned to KWOK_VERSION.

.PHONY: bin/manager
bin/manager:
	go build -trimpath -ldflags "-s -w" -o bin/manager ./cmd/manager

.PHONY: bench-upgrade
bench-upgrade: envtest-assets kube-controller-manager kwok bin/manager ## Upgrade 1,000 meshed Deployments on kwok nodes: time, most unavailable at once, operator CPU/RSS.
	go run ./bench/upgrade -kwok $(BIN)/kwok-$(KWOK_VERSION) $(BENCH_UPGRADE_FLAGS)

.PHONY: bench-upgrade-quick
bench-upgrade-quick: envtest-assets kube-controller-manager kwok bin/manager ## A smoke run of bench-upgrade: 50 Deployments, results in bench/out/.
	go run ./bench/upgrade -kwok $(BIN)/kwok-$(KWOK_VERSION) -deployments 50 -namespaces 5 -out bench/out/upgrade-quick.md $(BENCH_UPGRADE_FLAGS)
