# Experiment tracker (issue 4). Its tests also run in test-go (go test ./...);
# this target runs just them.
.PHONY: test-tracker
test-tracker: ## tracker tests: MLflow client vs the in-process MLflow server with faults, SQLite, sync, runs CLI
	$(GO) test $(GO_TEST_FLAGS) ./tracker/...
	$(GO) test $(GO_TEST_FLAGS) -run 'TestRuns' ./cmd/flywheel/
