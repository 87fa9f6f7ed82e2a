# README.md and docs/*.md examples (issue 16): internal/doctest runs every ```sh
# block against a real flywheel serve on the shipped models (part of test-go);
# its counts are written here and printed at the end of `make test`.
DOCTEST_REPORT := $(CURDIR)/var/doctest.txt
export FLYWHEEL_DOCTEST_REPORT := $(DOCTEST_REPORT)
TEST_TARGETS += test-doctest-report

.PHONY: test-doctest test-doctest-report
test-doctest: deps ## run the README's and docs/' shell examples against a real flywheel serve (also part of test-go)
	$(GO) test $(GO_TEST_FLAGS) -v -run 'TestDocumentExamples|TestMakeTargetsInHelp|TestScriptsHelp' ./internal/doctest

test-doctest-report:
	@if [ -f $(DOCTEST_REPORT) ]; then cat $(DOCTEST_REPORT); fi
