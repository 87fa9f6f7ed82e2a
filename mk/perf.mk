# perf: fuzzing of the tensor codecs in `make test`; benchmarks only on demand.
.PHONY: test-perf bench bench-go

TEST_TARGETS += test-perf

test-perf: ## bounded fuzzing of the OIP data decoder, the infer fast path and the binary tensor codec (100k inputs each: a count bound, since a time bound can fail spuriously on a loaded box)
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 100000x ./server/tensorjson
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeFast$$' -fuzztime 100000x ./server/oip
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeBinary$$' -fuzztime 100000x ./server/oip
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 100000x ./server/binarydata

bench: build ## Flywheel (log on and off) vs the Node.js peer, the ceiling server and ONNX Runtime alone in one sitting: closed loop c=1,8,64 + open loop, Markdown table with ratios and CPU per request (~15 min; not in make test)
	loadtest/bench.sh

bench-go: deps ## in-process Go benchmarks: batcher vs direct session calls, JSON codec vs encoding/json
	$(GO) test -run '^$$' -bench 'Speedup' -benchtime 3x ./server/batch
	$(GO) test -run '^$$' -bench . -benchmem ./server/tensorjson

.PHONY: bench-rss
bench-rss: build ## RSS of flywheel serve under 5 minutes of load stays within 10% of minute 1 (not in make test)
	loadtest/rss.sh
