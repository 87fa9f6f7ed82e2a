# Project documents (issue 9). `make test` already runs these through test-go
# (`go test ./...`); this target runs only the document checks: runbook anchors
# for every alert, OpenAPI validity and routes, and the figures rule.
.PHONY: test-docs
test-docs: ## check docs/: runbook links, openapi.yaml, every figure names a command
	$(GO) test $(GO_TEST_FLAGS) ./docs/
