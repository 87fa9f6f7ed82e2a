# Hostile requests (issue #15): every case against a real serve and trainer on 127.0.0.1
# (internal/hostile, build tag "hostile"), and the fuzz target over whole HTTP requests
# of infer, /invocations and feedback: a short count-bounded run in make test, a longer one on demand.
TEST_TARGETS += test-hostile test-fuzz-http

HOSTILE_FUZZ_COUNT ?= 20000x
HOSTILE_FUZZ_TIME  ?= 10m
# The fuzz engine minimizes every input that finds new coverage on one worker, for up to
# -fuzzminimizetime (Go's default is 60 s), and with -fuzztime Nx it gives the other workers
# no inputs meanwhile: a slow input stalled make test at 0 execs/s for a minute (issue 15).
HOSTILE_FUZZ_MINIMIZE ?= 5s

.PHONY: test-hostile test-fuzz-http fuzz-http
test-hostile: deps ## hostile requests against a real serve and trainer (bounded: 3 minutes)
	$(GO) test -tags hostile -count=1 -timeout 3m -run '^TestHostile$$' -v ./internal/hostile

test-fuzz-http: deps ## fuzz whole HTTP requests of infer, /invocations and feedback (bounded: $(HOSTILE_FUZZ_COUNT))
	$(GO) test -count=1 -timeout 5m -run '^$$' -fuzz '^FuzzHTTPRequest$$' -fuzztime $(HOSTILE_FUZZ_COUNT) -fuzzminimizetime $(HOSTILE_FUZZ_MINIMIZE) ./internal/hostile

fuzz-http: deps ## fuzz whole HTTP requests for longer (HOSTILE_FUZZ_TIME, default 10m)
	$(GO) test -count=1 -timeout 0 -run '^$$' -fuzz '^FuzzHTTPRequest$$' -fuzztime $(HOSTILE_FUZZ_TIME) -fuzzminimizetime $(HOSTILE_FUZZ_MINIMIZE) ./internal/hostile
