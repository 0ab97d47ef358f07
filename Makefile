# Weft. `make help` lists the targets.
#
# Everything a test needs is built or installed from this file: tools pinned
# below go into ./bin (git-ignored, cached between runs), Kubernetes control-plane
# binaries into ./bin/k8s/$(K8S_VERSION) from the Go module proxy (see
# hack/tools/kube), Debian packages with apt-get when running as root.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

# The operator's version (semver, no leading v): images, the OLM bundle.
VERSION    ?= 0.1.0
REGISTRY   ?= ghcr.io/weftmesh
BUNDLE_CHANNELS   ?= stable,candidate
BUNDLE_REPLACES   ?=
BUNDLE_SKIP_RANGE ?= >=0.0.0 <$(VERSION)

# Versions. The Kubernetes version matches the k8s.io libraries in go.mod.
K8S_VERSION            ?= 1.37.2
CONTROLLER_GEN_VERSION ?= v0.23.0
PROTOC_GEN_GO_VERSION  ?= v1.36.12
PROTOC_GEN_GRPC_VERSION ?= v1.6.2
FORTIO_VERSION         ?= v1.68.2
KWOK_VERSION           ?= v0.8.0
H2SPEC_VERSION         ?= v2.2.1

REPO      := $(shell pwd)
BIN       := $(REPO)/bin
K8S_BIN   := $(BIN)/k8s/$(K8S_VERSION)
CONTROLLER_GEN := $(BIN)/controller-gen-$(CONTROLLER_GEN_VERSION)
PROTOC_GEN_GO  := $(BIN)/protoc-gen-go-$(PROTOC_GEN_GO_VERSION)
PROTOC_GEN_GRPC := $(BIN)/protoc-gen-go-grpc-$(PROTOC_GEN_GRPC_VERSION)
PROTOC         := $(BIN)/protoc-$(shell sed -n 's|^\tgithub.com/bufbuild/protocompile \(v[^ ]*\)$$|\1|p' hack/tools/protoc/go.mod)
KUBE_LDFLAGS := -s -w \
	-X k8s.io/component-base/version.gitVersion=v$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=$(word 1,$(subst ., ,$(K8S_VERSION))) \
	-X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION))) \
	-X k8s.io/component-base/version.gitTreeState=clean

# Debian packages the tests use: iptables and iproute2 for network-namespace
# tests of proxy-init, curl for the demo. (The .proto compiler is built from
# the Go module proxy, hack/tools/protoc, so its output does not depend on the
# machine.)
APT_PACKAGES ?= iptables iproute2 curl

# go test's default 10-minute limit per package is too close for test/e2e
# (5 to 7 minutes alone under the race detector on 2 vCPUs, more while other
# packages build and run beside it); CI allows 90 minutes for the whole run.
GO_TEST_FLAGS ?= -race -count=1 -timeout 30m
export KUBEBUILDER_ASSETS := $(K8S_BIN)
export CONTROLLER_GEN

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z0-9_.-]+:.*?##/ { printf "  %-22s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Getting started

.PHONY: demo
demo: test-deps envtest-assets e2e-assets ## A whole mesh on a local API server, with two services, a split and a policy; Ctrl-C ends it.
	@echo "Building and starting the demo (the first run builds Kubernetes binaries: expect several minutes)..."
	go test -c -o $(BIN)/e2e.test ./test/e2e
	WEFT_DEMO=1 $(BIN)/e2e.test -test.run '^TestDemo$$' -test.timeout 0 -test.v

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC from the Go markers, and the reference webhook configuration.
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=weft-operator paths=./controllers/... output:rbac:artifacts:config=config/rbac
	go run ./hack/webhook

.PHONY: generate
generate: $(CONTROLLER_GEN) proto ## Generate deepcopy and gRPC code.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: proto
proto: $(PROTOC) $(PROTOC_GEN_GO) $(PROTOC_GEN_GRPC) ## Generate the proxy/control-plane gRPC code from pkg/meshapi.
	$(PROTOC) -I . -plugin go=$(PROTOC_GEN_GO) -plugin go-grpc=$(PROTOC_GEN_GRPC) \
		-opt paths=source_relative -out . pkg/meshapi/v1/meshapi.proto

.PHONY: bundle
bundle: manifests ## Regenerate the OLM bundle (bundle/, bundle.Dockerfile) from config/manifests.
	go run ./hack/bundle -version $(VERSION) -registry $(REGISTRY) -channels $(BUNDLE_CHANNELS) \
		-replaces "$(BUNDLE_REPLACES)" -skip-range "$(BUNDLE_SKIP_RANGE)"

.PHONY: verify-generated
verify-generated: ## Fail if `make manifests generate bundle` changes any file.
	hack/verify-generated.sh

.PHONY: fmt
fmt: ## Run gofmt.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet and check formatting.
	go vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

.PHONY: build
build: ## Build the binaries into bin/.
	go build -o $(BIN)/ ./cmd/... ./proxy/cmd/...

.PHONY: docker-build
docker-build: ## Build the images (operator/control plane/weftctl, proxy, OLM bundle); needs a container engine.
	docker build --build-arg VERSION=v$(VERSION) -t $(REGISTRY)/weft:v$(VERSION) -t $(REGISTRY)/weft-controlplane:v$(VERSION) .
	docker build --build-arg VERSION=v$(VERSION) -t $(REGISTRY)/weft-proxy:v$(VERSION) -f proxy/Dockerfile .
	docker build -t $(REGISTRY)/weft-bundle:v$(VERSION) -f bundle.Dockerfile .

##@ Tests

.PHONY: test
test: test-deps envtest-assets e2e-assets verify-generated vet ## Run every test (unit, envtest against a real API server, network namespaces, whole mesh).
	go test $(GO_TEST_FLAGS) ./...

.PHONY: test-deps
test-deps: ## Install the Debian packages the tests need (when root and missing).
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then echo "Installing:$$missing"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null; \
	else echo "Missing Debian packages:$$missing (tests that need them will skip; install with: sudo apt-get install -y$$missing)"; fi

.PHONY: envtest-assets
envtest-assets: $(K8S_BIN)/kube-apiserver $(K8S_BIN)/etcd ## Build etcd and kube-apiserver for envtest.

.PHONY: kube-controller-manager
kube-controller-manager: $(K8S_BIN)/kube-controller-manager ## Build kube-controller-manager.

.PHONY: e2e-assets
e2e-assets: $(K8S_BIN)/kube-controller-manager $(K8S_BIN)/kubectl ## Build what the whole-mesh tests and the demo add (controller manager, kubectl).

# A cold build of kube-apiserver takes about 18 minutes on 2 cores; Go's build
# cache makes later ones take seconds. Built only when missing.
$(K8S_BIN)/kube-apiserver $(K8S_BIN)/etcd $(K8S_BIN)/kube-controller-manager $(K8S_BIN)/kubectl:
	@mkdir -p $(K8S_BIN)
	@echo "Building $(@F) v$(K8S_VERSION) from the Go module proxy (the first build takes a while)..."
	cd hack/tools/kube && go build -trimpath -ldflags "$(KUBE_LDFLAGS)" -o $@ ./$(@F)

$(PROTOC): hack/tools/protoc/main.go hack/tools/protoc/go.mod
	@mkdir -p $(BIN)
	cd hack/tools/protoc && go build -trimpath -o $@ .

$(PROTOC_GEN_GO):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	mv $(BIN)/protoc-gen-go $@

$(PROTOC_GEN_GRPC):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GRPC_VERSION)
	mv $(BIN)/protoc-gen-go-grpc $@

$(CONTROLLER_GEN):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	mv $(BIN)/controller-gen $@

.PHONY: clean
clean: ## Remove built binaries (keeps the cached Kubernetes binaries).
	find $(BIN) -maxdepth 1 -type f -delete 2>/dev/null || true

##@ Benchmarks (not part of make test; see bench/RESULTS.md)

include $(wildcard bench/*.mk)
