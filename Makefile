# The project's one entry point. `make demo` and `make test` are all a new
# machine needs: both install what they use through `make deps`.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

ROOT   := $(abspath .)
CACHE  := $(ROOT)/.cache
BIN    := $(CACHE)/bin
GOARCH := $(shell go env GOARCH)
export GOFLAGS := -buildvcs=false

# Pinned versions live in the tools modules' go.mod files; the build cache is
# keyed by them, so a bump rebuilds and nothing else does.
modversion = $(shell awk '{for (i = 1; i < NF; i++) if ($$i == "$(1)") {print $$(i+1); exit}}' $(2))
KUBE_VERSION    := $(call modversion,k8s.io/kubernetes,tools/kube/go.mod)
COREDNS_VERSION := $(call modversion,github.com/coredns/coredns,tools/coredns/go.mod)
HELM_VERSION    := $(call modversion,helm.sh/helm/v4,tools/helm/go.mod)
KUBE_BIN        := $(CACHE)/kube/$(KUBE_VERSION)/bin
COREDNS_BIN     := $(CACHE)/coredns/$(COREDNS_VERSION)/coredns
STATICCHECK     := $(CACHE)/lint/staticcheck
# The helm CLI users run, built from its Go module (the charts' tests use its SDK).
HELM            := $(CACHE)/helm/$(HELM_VERSION)/helm
ISTIOCTL        := $(BIN)/istioctl
KUBECTL         := $(KUBE_BIN)/kubectl

# Images: referenced by these names in the cluster and, later, the charts.
HUB           ?= localhost/mesh
TAG           ?= dev
IMAGES_DIR    := $(CACHE)/images
PAUSE_IMAGE   := $(HUB)/pause:$(TAG)
COREDNS_IMAGE := $(HUB)/coredns:$(COREDNS_VERSION)
ECHO_IMAGE    := $(HUB)/echo:$(TAG)
TOOLBOX_IMAGE := $(HUB)/toolbox:$(TAG)
# The mesh itself; Istio calls istiod's image pilot.
PILOT_IMAGE       := $(HUB)/pilot:$(TAG)
ZTUNNEL_IMAGE     := $(HUB)/ztunnel:$(TAG)
INSTALL_CNI_IMAGE := $(HUB)/install-cni:$(TAG)

# The local cluster.
NODES         ?= 2
CLUSTER_STATE := $(CACHE)/cluster
KUBECONFIG_LOCAL := $(CLUSTER_STATE)/admin.kubeconfig
export NODES CLUSTER_STATE KUBE_BIN IMAGES_DIR PAUSE_IMAGE COREDNS_IMAGE ECHO_IMAGE TOOLBOX_IMAGE \
	PILOT_IMAGE ZTUNNEL_IMAGE INSTALL_CNI_IMAGE KUBECTL HUB TAG HELM ISTIOCTL

DEBIAN_PACKAGES := etcd-server containerd runc containernetworking-plugins iptables conntrack \
	nftables iproute2 util-linux mount kmod procps tcpdump socat ethtool busybox-static \
	protobuf-compiler libprotobuf-dev clang llvm openssl

KUBE_TOOLS_LDFLAGS := -s -w \
	-X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=$(word 1,$(subst ., ,$(patsubst v%,%,$(KUBE_VERSION)))) \
	-X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(KUBE_VERSION))) \
	-X k8s.io/component-base/version.gitTreeState=clean \
	-X k8s.io/client-go/pkg/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/client-go/pkg/version.gitMajor=$(word 1,$(subst ., ,$(patsubst v%,%,$(KUBE_VERSION)))) \
	-X k8s.io/client-go/pkg/version.gitMinor=$(word 2,$(subst ., ,$(KUBE_VERSION)))

# Static binaries for images: no libc, so any base (or none) will do.
STATIC := CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) go build -trimpath -ldflags=-s

.PHONY: deps deps-debian build test unit e2e bench generate check-generate lint images cluster-up cluster-down demo clean

## deps: install every Debian package and Go-built tool the project needs (idempotent)
deps: deps-debian $(KUBE_BIN)/.built $(COREDNS_BIN) $(STATICCHECK) $(HELM)

deps-debian:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing Debian packages:$$missing"; \
		apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(KUBE_BIN)/.built: tools/kube/go.mod tools/kube/go.sum
	@echo "deps: building Kubernetes $(KUBE_VERSION) (about 8 minutes on 2 cores the first time)"
	@mkdir -p $(KUBE_BIN)
	cd tools/kube && go build -trimpath -ldflags="$(KUBE_TOOLS_LDFLAGS)" -o $(KUBE_BIN)/ tool
	@touch $@

$(COREDNS_BIN): tools/coredns/go.mod tools/coredns/go.sum
	@echo "deps: building CoreDNS $(COREDNS_VERSION)"
	cd tools/coredns && CGO_ENABLED=0 go build -trimpath -ldflags=-s -o $@ github.com/coredns/coredns

$(HELM): tools/helm/go.mod tools/helm/go.sum
	@echo "deps: building helm $(HELM_VERSION)"
	cd tools/helm && CGO_ENABLED=0 go build -trimpath \
		-ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$(HELM_VERSION)" -o $@ helm.sh/helm/v4/cmd/helm

$(STATICCHECK): tools/lint/go.mod tools/lint/go.sum
	cd tools/lint && go build -o $@ honnef.co/go/tools/cmd/staticcheck

## build: compile every package and the project's commands
build:
	go build ./...
	@mkdir -p $(BIN)
	go build -o $(BIN)/cluster ./tests/cluster/cmd/cluster
	go build -o $(BIN)/imagebuild ./tools/imagebuild
	go build -ldflags "-X github.com/ambient-mesh/mesh/pkg/version.Version=$(TAG)" -o $(ISTIOCTL) ./istioctl/cmd/istioctl
	$(STATIC) -o $(BIN)/linux/echo ./tests/apps/echo
	$(STATIC) -o $(BIN)/linux/pause ./tests/cluster/pause
	$(STATIC) -o $(BIN)/linux/istiod ./istiod/cmd/istiod
	$(STATIC) -o $(BIN)/linux/ztunnel ./ztunnel/cmd/ztunnel
	$(STATIC) -o $(BIN)/linux/install-cni ./cni/cmd/install-cni
	$(STATIC) -o $(BIN)/linux/istio-cni ./cni/cmd/istio-cni

## images: OCI image archives of the project's binaries and test apps
images: build $(COREDNS_BIN)
	$(BIN)/imagebuild -o $(IMAGES_DIR)/pause.tar -ref $(PAUSE_IMAGE) \
		-add $(BIN)/linux/pause:/pause -entrypoint /pause
	$(BIN)/imagebuild -o $(IMAGES_DIR)/coredns.tar -ref $(COREDNS_IMAGE) \
		-add $(COREDNS_BIN):/coredns -entrypoint /coredns
	$(BIN)/imagebuild -o $(IMAGES_DIR)/echo.tar -ref $(ECHO_IMAGE) \
		-add $(BIN)/linux/echo:/usr/local/bin/echo -entrypoint /usr/local/bin/echo
	# A shell and the usual tools, for tests that look at a node or a pod from inside.
	$(BIN)/imagebuild -o $(IMAGES_DIR)/toolbox.tar -ref $(TOOLBOX_IMAGE) \
		-add /bin/busybox:/bin/busybox -entrypoint /bin/busybox -arg sh
	$(BIN)/imagebuild -o $(IMAGES_DIR)/pilot.tar -ref $(PILOT_IMAGE) \
		-add $(BIN)/linux/istiod:/usr/local/bin/istiod -entrypoint /usr/local/bin/istiod
	$(BIN)/imagebuild -o $(IMAGES_DIR)/ztunnel.tar -ref $(ZTUNNEL_IMAGE) \
		-add $(BIN)/linux/ztunnel:/usr/local/bin/ztunnel -entrypoint /usr/local/bin/ztunnel
	# The node agent, and the plugin it copies into the node's CNI bin dir
	# (its -plugin-binary default).
	$(BIN)/imagebuild -o $(IMAGES_DIR)/install-cni.tar -ref $(INSTALL_CNI_IMAGE) \
		-add $(BIN)/linux/install-cni:/usr/local/bin/install-cni \
		-add $(BIN)/linux/istio-cni:/opt/cni/bin/istio-cni -entrypoint /usr/local/bin/install-cni

## lint: go vet, staticcheck, gofmt and helm lint of every chart
lint: $(STATICCHECK) $(HELM)
	$(HELM) lint --quiet charts/base charts/istiod charts/cni charts/ztunnel
	go vet ./...
	go vet -tags e2e ./tests/...
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags e2e ./tests/...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.cache/*')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## generate: regenerate generated code (protoc from Debian, protoc-gen-go from tools/proto)
generate: deps-debian
	@command -v protoc >/dev/null || { echo "generate: protoc not found (Debian package protobuf-compiler)" >&2; exit 1; }
	go generate ./...

## check-generate: fail when generated code differs from what `make generate` produces
check-generate: generate
	@gen="'*.pb.go' '*_bpfel.go' '*_bpfeb.go' '*_bpfel.o' '*_bpfeb.o' '*.gen.yaml'"; \
	if ! eval git diff --quiet -- $$gen || [ -n "$$(eval git ls-files --others --exclude-standard -- $$gen)" ]; then \
		echo "generated files are stale; run make generate and commit:"; \
		eval git diff --stat -- $$gen; eval git ls-files --others --exclude-standard -- $$gen; exit 1; fi

## unit: unit tests, with the race detector; pkg/sockio and its users once more
## without it, since their system calls differ under the detector (pkg/sockio/raw_race.go)
unit:
	go test -race -count=1 -timeout 5m ./...
	go test -count=1 -timeout 5m ./pkg/sockio/ ./pkg/hbone/ ./ztunnel/...

## e2e: end-to-end tests on the local cluster (brought up, and down again, if not already running)
e2e: deps build images
	@if $(BIN)/cluster status >/dev/null 2>&1; then reuse=1; $(BIN)/cluster load-images; else reuse=0; fi; \
	rc=0; $(BIN)/cluster up || rc=$$?; \
	if [ $$rc -eq 0 ]; then \
		KUBECONFIG=$(KUBECONFIG_LOCAL) go test -tags e2e -count=1 -timeout 30m -v ./tests/e2e/... || rc=$$?; \
	fi; \
	if [ $$reuse -eq 0 ]; then $(BIN)/cluster down || rc=$$((rc ? rc : 1)); fi; \
	exit $$rc

## test: everything CI runs
test: deps lint check-generate unit e2e

## bench: Go benchmarks, the data-path benchmark on a netns topology (root), every ratio measured in one run, then the istiod scale benchmark
bench:
	go test -run '^$$' -bench . -benchmem ./...
	go run ./tests/bench/cmd/netbench
	@$(MAKE) --no-print-directory bench-istiod

## bench-istiod: istiod at scale against the local cluster's API server (brought up, and down again, if not already running); flags in ISTIODBENCH_FLAGS, e.g. "-pods 10000 -services 2000"
ISTIODBENCH_FLAGS ?=
.PHONY: bench-istiod
bench-istiod: deps build images
	@if $(BIN)/cluster status >/dev/null 2>&1; then reuse=1; else reuse=0; fi; \
	rc=0; if [ $$reuse -eq 0 ]; then $(BIN)/cluster up || rc=$$?; fi; \
	if [ $$rc -eq 0 ]; then \
		KUBECONFIG=$(KUBECONFIG_LOCAL) go run ./tests/bench/cmd/istiodbench $(ISTIODBENCH_FLAGS) || rc=$$?; \
	fi; \
	if [ $$reuse -eq 0 ]; then $(BIN)/cluster down || rc=$$((rc ? rc : 1)); fi; \
	exit $$rc

## cluster-up: bring the local cluster up (idempotent) and show its nodes
cluster-up: deps build images
	$(BIN)/cluster up
	@$(KUBECTL) --kubeconfig $(KUBECONFIG_LOCAL) get nodes -o wide
	@echo "export KUBECONFIG=$(KUBECONFIG_LOCAL)"

## cluster-down: stop the local cluster and remove all its state
cluster-down:
	@if [ -x $(BIN)/cluster ]; then $(BIN)/cluster down; else go run ./tests/cluster/cmd/cluster down; fi

## demo: the main job: local cluster, the mesh installed with helm, sample app, traffic and a report
demo: cluster-up
	KUBECONFIG=$(KUBECONFIG_LOCAL) go run ./tests/demo

clean: cluster-down
	rm -rf $(BIN) $(IMAGES_DIR)
