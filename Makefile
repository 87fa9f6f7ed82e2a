# Flywheel — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ORT_VERSION := 1.24.3
ORT_SHA256  := 92ba8e44d31b80a34f5e805076a044122c3be1fffe0d88ed790de7267b0b2682
ORT_LIB     := lib/libonnxruntime.so.1
BIN         := bin/flywheel
GO          ?= go
# Debian packages the tests need: real Prometheus/promtool, Alertmanager/amtool,
# the ONNX checker, wrk for load scripts, protoc for regenerating onnx.proto code.
SYS_PACKAGES := prometheus prometheus-alertmanager python3-onnx wrk protobuf-compiler
SYS_COMMANDS := promtool prometheus amtool prometheus-alertmanager wrk protoc
GO_TEST_FLAGS ?= -count=1 -timeout 20m

export FLYWHEEL_ORT_LIB ?= $(CURDIR)/$(ORT_LIB)

# Fragments in mk/ add their own targets and append to TEST_TARGETS.
TEST_TARGETS :=
-include mk/*.mk

# Variables named in target descriptions ($(ORT_VERSION) …), expanded by help.
HELP_VARS := $(sort $(patsubst $$(%),%,$(shell grep -hE '^[a-zA-Z0-9_.-]+:.*\#\# ' $(MAKEFILE_LIST) | grep -oE '\$$\([A-Z0-9_]+\)')))

.PHONY: help deps sysdeps build run test test-go lint clean
help: ## list targets (descriptions with make's variables expanded)
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | $(foreach v,$(HELP_VARS),$(v)='$($(v))') awk -F':.*## ' \
	  '{ d = $$2; while (match(d, /\$$\([A-Z0-9_]+\)/)) d = substr(d, 1, RSTART-1) ENVIRON[substr(d, RSTART+2, RLENGTH-3)] substr(d, RSTART+RLENGTH); \
	     printf "  %-20s %s\n", $$1, d }'

deps: $(ORT_LIB) ## fetch ONNX Runtime $(ORT_VERSION) into lib/ (from the onnxruntime-node npm package)

$(ORT_LIB):
	@set -euo pipefail; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "fetching ONNX Runtime $(ORT_VERSION) (npm package onnxruntime-node@$(ORT_VERSION))"; \
	(cd "$$tmp" && npm pack --silent onnxruntime-node@$(ORT_VERSION) >/dev/null); \
	tar -xzf "$$tmp"/onnxruntime-node-$(ORT_VERSION).tgz -C "$$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1; \
	echo "$(ORT_SHA256)  $$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" | sha256sum -c --quiet -; \
	mkdir -p lib; mv "$$tmp"/package/bin/napi-v6/linux/x64/libonnxruntime.so.1 $@.part && mv $@.part $@; \
	echo "installed $@"

sysdeps: ## install the Debian packages the tests need (skips what is present)
	@set -euo pipefail; missing=0; \
	for c in $(SYS_COMMANDS); do command -v $$c >/dev/null || missing=1; done; \
	/usr/bin/python3 -c 'import onnx' 2>/dev/null || missing=1; \
	if [ $$missing = 1 ]; then \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $(SYS_PACKAGES) >/dev/null; \
	fi

build: deps ## build bin/flywheel (the first build takes minutes: cgo bindings of ONNX Runtime and SQLite)
	@if [ -e $(BIN) ]; then echo "building $(BIN) (go build ./cmd/flywheel)"; \
	else echo "building $(BIN) (go build ./cmd/flywheel): the first build compiles the cgo bindings of ONNX Runtime and SQLite, 2-6 minutes on a busy 2-core box; later builds take seconds"; fi
	@start=$$(date +%s); $(GO) build -o $(BIN) ./cmd/flywheel && echo "built $(BIN) in $$(( $$(date +%s) - start )) s"

run: build ## serve ./models on 127.0.0.1:8080 (loopback only; builds first)
	@echo "serving ./models on 127.0.0.1:8080 (Ctrl-C stops it). In another terminal: curl -s localhost:8080/v2/models/ridership"
	./$(BIN) serve --models ./models --listen 127.0.0.1:8080

test: deps sysdeps lint test-go $(TEST_TARGETS) ## every test (unit, integration, end to end, the README's examples)

test-go:
	$(GO) test $(GO_TEST_FLAGS) ./...

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean: ## remove build outputs (keeps lib/)
	rm -rf bin
