# Retraining loop (issue 6): trainer service, job queue, pipeline, replay, e2e harness.
LOOP_PKGS := ./train/alert/... ./train/jobs/... ./train/pipeline/... ./train/external/... \
             ./train/serving/... ./train/service/... ./train/replay/... ./internal/harness/... ./internal/e2e/...

.PHONY: test-loop
test-loop: deps ## run the retraining loop's tests (also part of test-go)
	$(GO) test $(GO_TEST_FLAGS) $(LOOP_PKGS)
	$(GO) test $(GO_TEST_FLAGS) -run 'Trainer|Replay' ./cmd/flywheel
