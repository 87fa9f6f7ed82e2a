# Hostile requests (issue #15): every case against a real serve and trainer on 127.0.0.1
# (internal/hostile, build tag "hostile"), and the fuzz target over whole HTTP requests
# of infer, /invocations and feedback: a short count-bounded run in make test, a longer one on demand.
TEST_TARGETS += test-hostile test-fuzz-http

# 5000x: two make test runs stalled (0 execs/s for over a minute) at 12-14.5k inputs, cause not yet
# found; `make fuzz-http` runs longer.
HOSTILE_FUZZ_COUNT ?= 5000x
HOSTILE_FUZZ_TIME  ?= 10m

.PHONY: test-hostile test-fuzz-http fuzz-http
test-hostile: deps ## hostile requests against a real serve and trainer (bounded: 3 minutes)
	$(GO) test -tags hostile -count=1 -timeout 3m -run '^TestHostile$$' -v ./internal/hostile

test-fuzz-http: deps ## fuzz whole HTTP requests of infer, /invocations and feedback (bounded: $(HOSTILE_FUZZ_COUNT))
	$(GO) test -count=1 -timeout 5m -run '^$$' -fuzz '^FuzzHTTPRequest$$' -fuzztime $(HOSTILE_FUZZ_COUNT) ./internal/hostile

fuzz-http: deps ## fuzz whole HTTP requests for longer (HOSTILE_FUZZ_TIME, default 10m)
	$(GO) test -count=1 -timeout 0 -run '^$$' -fuzz '^FuzzHTTPRequest$$' -fuzztime $(HOSTILE_FUZZ_TIME) ./internal/hostile
