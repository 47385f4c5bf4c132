# Castellan — see README.md. The two commands a new user types:
#   make demo   Bookinfo over mutual TLS with identities Castellan issues and rotates
#   make test   every test, including the real-binary and real-kube-apiserver ones
#               (and the PostgreSQL store's, on servers of their own: as root,
#               internal/pgtest installs Debian's postgresql package if missing)

GO        ?= go
BIN       ?= bin
CACHE     ?= $(or $(CASTELLAN_CACHE),$(HOME)/.cache/castellan)
TESTFLAGS ?= -count=1 -timeout 30m
BENCHTIME ?= 3s

COMMANDS := castellan-server castellan-agent castellanctl castellan-demo
BOOKINFO := productpage details reviews ratings

.PHONY: all build images test unit demo proto bench lint kube-testenv kube-node kube-coredns spire-agent helm promtool omniwitness clean

all: build

build:
	@mkdir -p $(BIN)/bookinfo
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(COMMANDS))
	$(GO) build -o $(BIN)/bookinfo/ $(addprefix ./integration/bookinfo/,$(BOOKINFO))

# kube-testenv is the real kube-apiserver + etcd the Kubernetes tests run
# against, spire-agent is SPIRE's CLI for the interop test; both are built
# once into $(CACHE)/bin (about 11 and 2 minutes the first time).
kube-testenv:
	./integration/kube/testenv/build.sh

# kube-node (kubelet, kube-scheduler, kube-controller-manager, kube-proxy
# v1.34.4) and kube-coredns (CoreDNS v1.13.2) complete kube-testenv into the
# real single-node cluster of integration/cluster; built once into
# $(CACHE)/bin (after kube-testenv, on a busy 2-core machine: about 6 and 2
# minutes).
kube-node:
	./integration/kube/node/build.sh
kube-coredns:
	./integration/kube/coredns/build.sh
spire-agent:
	./integration/spire/tool/build.sh

# images: OCI images (linux/amd64 + linux/arm64) of the binaries and the Go
# Bookinfo services, built in pure Go by deploy/image (no container engine,
# nothing pulled), one OCI layout per image in $(BIN)/images/<name>.
# Reproducible: the same commit gives the same digests. Push one with
#   go run github.com/google/go-containerregistry/cmd/crane@v0.22.1 \
#     push $(BIN)/images/castellan-server REGISTRY/castellan-server:$(IMAGE_VERSION)
IMAGE_VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
IMAGE_REVISION    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
images:
	$(GO) run ./deploy/image --out $(BIN)/images --version $(IMAGE_VERSION) \
		--revision $(IMAGE_REVISION) --created $(SOURCE_DATE_EPOCH)

# helm (v3.22.0) and promtool (Prometheus v3.16.0) check the chart, the
# dashboard and the alert rules; built once from the Go module proxy into
# $(CACHE)/bin (cold: about 3.5 and 10.5 CPU-minutes).
helm:
	./integration/helm/tool/build.sh
promtool:
	./integration/promtool/tool/build.sh

# omniwitness (transparency-dev's C2SP tlog-witness) is the independent
# witness the ca/witness tests submit checkpoints to; built once from the
# Go module proxy into $(CACHE)/bin (about a minute).
omniwitness:
	./integration/omniwitness/build.sh

test: build
	CASTELLAN_KUBE_TESTENV="$$(./integration/kube/testenv/build.sh)" CASTELLAN_REQUIRE_KUBE=1 \
		CASTELLAN_SPIRE_AGENT="$$(./integration/spire/tool/build.sh)" CASTELLAN_REQUIRE_SPIRE=1 \
		CASTELLAN_HELM="$$(./integration/helm/tool/build.sh)" CASTELLAN_REQUIRE_HELM=1 \
		CASTELLAN_PROMTOOL="$$(./integration/promtool/tool/build.sh)" CASTELLAN_REQUIRE_PROMTOOL=1 \
		CASTELLAN_OMNIWITNESS="$$(./integration/omniwitness/build.sh)" CASTELLAN_REQUIRE_OMNIWITNESS=1 \
		CASTELLAN_KUBE_NODE="$$(./integration/kube/node/build.sh)" \
		CASTELLAN_KUBE_COREDNS="$$(./integration/kube/coredns/build.sh)" CASTELLAN_CLUSTER=1 \
		CASTELLAN_REQUIRE_IMAGES=1 CASTELLAN_REQUIRE_ROOT=1 \
		CASTELLAN_BIN=$(abspath $(BIN)) $(GO) test $(TESTFLAGS) ./...
	cd bench/compare && GOWORK=off $(GO) vet ./... && GOWORK=off $(GO) test $(TESTFLAGS) ./...

# unit runs the tests that need no kube-apiserver (they skip themselves).
unit: build
	CASTELLAN_BIN=$(abspath $(BIN)) $(GO) test $(TESTFLAGS) ./...

demo: build
	./$(BIN)/castellan-demo --bin $(BIN)

proto:
	cd api && $(GO) tool -modfile=tools.mod buf lint && $(GO) tool -modfile=tools.mod buf generate

bench: build
	CASTELLAN_BIN=$(abspath $(BIN)) $(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

# bench-compare: Castellan and SPIRE side by side on this machine, equal
# settings (bench/compare, its own module): spire-server v1.13.3 is built
# once into $(CACHE)/bin (15-45 minutes the first time; never by make
# test). COMPARE_FLAGS passes e.g. --duration 10s --rounds 3.
.PHONY: bench-compare
bench-compare: build
	cd bench/compare && GOWORK=off $(GO) run . --castellan-server $(abspath $(BIN))/castellan-server \
		--spire-server "$$($(CURDIR)/integration/spire/tool/build-server.sh)" $(COMPARE_FLAGS)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

clean:
	rm -rf $(BIN)
