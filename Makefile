# Castellan — see README.md. The two commands a new user types:
#   make demo   Bookinfo over mutual TLS with identities Castellan issues and rotates
#   make test   every test, including the real-binary and real-kube-apiserver ones

GO        ?= go
BIN       ?= bin
CACHE     ?= $(or $(CASTELLAN_CACHE),$(HOME)/.cache/castellan)
TESTFLAGS ?= -count=1 -timeout 30m
BENCHTIME ?= 3s

COMMANDS := castellan-server castellan-agent castellanctl castellan-demo
BOOKINFO := productpage details reviews ratings

.PHONY: all build test unit demo proto bench lint kube-testenv spire-agent clean

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
spire-agent:
	./integration/spire/tool/build.sh

test: build
	CASTELLAN_KUBE_TESTENV="$$(./integration/kube/testenv/build.sh)" CASTELLAN_REQUIRE_KUBE=1 \
		CASTELLAN_SPIRE_AGENT="$$(./integration/spire/tool/build.sh)" CASTELLAN_REQUIRE_SPIRE=1 \
		CASTELLAN_BIN=$(abspath $(BIN)) $(GO) test $(TESTFLAGS) ./...

# unit runs the tests that need no kube-apiserver (they skip themselves).
unit: build
	CASTELLAN_BIN=$(abspath $(BIN)) $(GO) test $(TESTFLAGS) ./...

demo: build
	./$(BIN)/castellan-demo --bin $(BIN)

proto:
	cd api && $(GO) tool -modfile=tools.mod buf lint && $(GO) tool -modfile=tools.mod buf generate

bench: build
	CASTELLAN_BIN=$(abspath $(BIN)) $(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

clean:
	rm -rf $(BIN)
