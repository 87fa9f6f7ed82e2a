# serve: fuzz the OIP request decoder for a bounded time (seed corpus in server/oip/testdata/fuzz).
TEST_TARGETS += test-fuzz

.PHONY: test-fuzz
test-fuzz: ## fuzz the inference request decoder (bounded: 200k inputs)
	$(GO) test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=200000x ./server/oip

# ONNX Runtime's StringNormalizer (onnxruntime_go's example_strings.onnx, served in the api tests)
# needs the en_US.UTF-8 locale; Debian images ship without it. Runs before the Makefile's sysdeps.
.PHONY: sysdeps-locale
sysdeps: sysdeps-locale
sysdeps-locale: ## generate the en_US.UTF-8 locale the string-model tests need
	@set -euo pipefail; locale -a 2>/dev/null | grep -qiE '^en_US\.utf-?8$$' && exit 0; \
	sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	command -v localedef >/dev/null || { $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends locales >/dev/null; }; \
	$$sudo localedef -i en_US -f UTF-8 en_US.UTF-8
