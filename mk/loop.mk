# Retraining loop (issue 6): trainer service, job queue, pipeline, replay, e2e harness, demo.
LOOP_PKGS := ./train/alert/... ./train/jobs/... ./train/pipeline/... ./train/external/... \
             ./train/serving/... ./train/service/... ./train/replay/... ./internal/harness/... ./internal/e2e/...

# The closed-loop end-to-end test (internal/e2e, run by test-go) writes its
# KPIs here; test-loop-report prints them at the end of `make test`.
E2E_REPORT := $(CURDIR)/var/e2e-loop.txt
export FLYWHEEL_E2E_REPORT := $(E2E_REPORT)
TEST_TARGETS += test-loop-report

.PHONY: test-loop test-e2e test-loop-report demo
test-loop: deps ## run the retraining loop's tests (also part of test-go)
	$(GO) test $(GO_TEST_FLAGS) $(LOOP_PKGS)
	$(GO) test $(GO_TEST_FLAGS) -run 'Trainer|Replay|Tracker|LoopFeatures' ./cmd/flywheel
	@if [ -f $(E2E_REPORT) ]; then cat $(E2E_REPORT); fi

test-e2e: deps ## only the closed-loop end-to-end test, verbose (about a minute)
	$(GO) test $(GO_TEST_FLAGS) -v -run TestClosedLoop ./internal/e2e

test-loop-report:
	@if [ -f $(E2E_REPORT) ]; then cat $(E2E_REPORT); fi

DEMO_FLAGS ?=
demo: build sysdeps ## the retraining loop live on loopback (serve, trainer, Prometheus, Alertmanager, a 2013→2016 replay); Ctrl-C stops it
	$(GO) build -o bin/flywheel-demo ./internal/demo
	./bin/flywheel-demo --bin $(BIN) $(DEMO_FLAGS)
