# serve: fuzz the OIP request decoder for a bounded time (seed corpus in server/oip/testdata/fuzz).
TEST_TARGETS += test-fuzz

.PHONY: test-fuzz
test-fuzz: ## fuzz the inference request decoder for 10 s
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=10s ./server/oip
