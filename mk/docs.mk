# Project documents (issue 9). `make test` already runs these through test-go
# (`go test ./...`); this target runs only the document checks: runbook anchors
# for every alert, OpenAPI validity and routes, and the figures rule.
.PHONY: test-docs
test-docs: ## check docs/: runbook links, openapi.yaml, every figure names a command
	$(GO) test $(GO_TEST_FLAGS) ./docs/

# docs/configuration.md is generated from the commands' flags
# (`flywheel <command> --help=markdown`); go test ./cmd/flywheel/ fails when it is stale.
.PHONY: docs
docs: ## regenerate docs/configuration.md from the flags
	$(GO) test -count=1 -run '^TestConfigurationDocUpToDate$$' ./cmd/flywheel -update
