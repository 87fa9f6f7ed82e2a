# Training: ONNX protobuf code generation and external validation of exported models.
PROTOC_GEN_GO_VERSION := v1.36.11
TEST_TARGETS += test-onnx-check

.PHONY: proto test-onnx-check
proto: ## regenerate train/export/onnxpb from onnx.proto (protoc + protoc-gen-go)
	@command -v protoc >/dev/null || { echo "protoc missing: make sysdeps"; exit 1; }
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	cd train/export/onnxpb && PATH=$(CURDIR)/bin:$$PATH $(GO) generate .

test-onnx-check: ## onnx.checker.check_model(full_check=True) on every committed model.onnx
	@set -euo pipefail; files=$$(find models -name model.onnx -not -path '*/.*' | sort); \
	[ -n "$$files" ] || { echo "no model.onnx under models/"; exit 1; }; \
	/usr/bin/python3 -c 'import sys, onnx'$$'\n''for p in sys.argv[1:]:'$$'\n''    m = onnx.load(p); onnx.checker.check_model(m, full_check=True); print("onnx.checker ok:", p, "ir", m.ir_version, {o.domain or "ai.onnx": o.version for o in m.opset_import})' $$files

.PHONY: retrain-model
retrain-model: build ## retrain the committed default model models/ridership/1 (backtest-selected, seed 1; not part of make test)
	@set -euo pipefail; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	./$(BIN) train --algorithm ridge,mlp,gbdt --seed 1 --models "$$tmp" --track=false --quiet | tee "$$tmp/train.txt"; \
	cp "$$tmp"/ridership/1/model.onnx "$$tmp"/ridership/1/model.json models/ridership/1/; \
	echo "models/ridership/1 retrained"
