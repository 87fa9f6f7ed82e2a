# A real MLflow 2.10.2 tracking server (issue 14) for the tracker's contract
# tests, `flywheel train`/`runs`/`serve --models models:/…` tests and demos.
# Installed once into bin/tools/mlflow (venv/ with the server and MLflow's
# Python client) from ../shared/mlflow when that directory exists, else from
# PyPI into a venv. The stamp file makes a second `make mlflow` instant.
MLFLOW_VERSION := 2.10.2
MLFLOW_HOME    := bin/tools/mlflow
MLFLOW_SHARED  := ../shared/mlflow
MLFLOW_STAMP   := $(MLFLOW_HOME)/.installed-$(MLFLOW_VERSION)
MLFLOW_PORT    ?= 5000
MLFLOW_DATA    ?= bin/mlflow-data
export FLYWHEEL_MLFLOW_HOME ?= $(CURDIR)/$(MLFLOW_HOME)

# Its tests run in test-go (make test); test-mlflow runs just them.
.PHONY: mlflow mlflow-server test-mlflow
mlflow: $(MLFLOW_STAMP) ## install MLflow $(MLFLOW_VERSION) (server + Python client) into bin/tools/mlflow

$(MLFLOW_STAMP):
	@set -euo pipefail; \
	if [ -x $(MLFLOW_SHARED)/install.sh ]; then \
	  $(MLFLOW_SHARED)/install.sh $(MLFLOW_HOME); \
	else \
	  echo "$(MLFLOW_SHARED) not found: installing mlflow==$(MLFLOW_VERSION) from PyPI into $(MLFLOW_HOME)/venv"; \
	  python3 -m venv $(MLFLOW_HOME)/venv; \
	  $(MLFLOW_HOME)/venv/bin/pip install -q mlflow==$(MLFLOW_VERSION); \
	fi; \
	$(MLFLOW_HOME)/venv/bin/mlflow --version | grep -q $(MLFLOW_VERSION); \
	touch $@

# The Go tests of tracker/, cmd/flywheel and train/ start the real server.
test-go: mlflow

mlflow-server: mlflow ## run the real MLflow server on 127.0.0.1:$(MLFLOW_PORT) (UI + registry; data in $(MLFLOW_DATA))
	@if [ -x $(MLFLOW_SHARED)/start.sh ]; then exec $(MLFLOW_SHARED)/start.sh $(MLFLOW_HOME) $(MLFLOW_DATA) $(MLFLOW_PORT); fi; \
	mkdir -p $(MLFLOW_DATA)/artifacts; d=$$(cd $(MLFLOW_DATA) && pwd); \
	exec $(MLFLOW_HOME)/venv/bin/mlflow server --host 127.0.0.1 --port $(MLFLOW_PORT) \
	  --backend-store-uri sqlite:///$$d/mlflow.db --serve-artifacts --artifacts-destination $$d/artifacts

test-mlflow: mlflow ## tracker contract suite against the real MLflow server and the imitation; train/runs/serve against the real server
	$(GO) test $(GO_TEST_FLAGS) -run 'Contract|Real' ./tracker/... ./cmd/flywheel/ ./internal/harness/
