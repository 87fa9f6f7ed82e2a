# Scale-out (issue 19): PostgreSQL backends of the prediction log, feedback
# and job queue, the storage contract suites run against a real PostgreSQL 15
# (Debian's postgresql-15, started by internal/harness as the unprivileged
# postgres user on a free 127.0.0.1 port) and HAProxy for the replicated e2e.
PG_BIN ?= /usr/lib/postgresql/15/bin
SCALE_PACKAGES := postgresql-15 haproxy

.PHONY: pg-deps test-scale
pg-deps: ## install PostgreSQL 15 and HAProxy from Debian (skips what is present)
	@set -euo pipefail; \
	if [ ! -x $(PG_BIN)/postgres ] || ! command -v haproxy >/dev/null; then \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $(SCALE_PACKAGES) >/dev/null; \
	fi; \
	test -x $(PG_BIN)/postgres || { echo "PostgreSQL 15 server missing at $(PG_BIN)"; exit 1; }

# The contract suites are part of go test ./...: the server must be there.
test-go: pg-deps

test-scale: pg-deps ## storage contract suites (SQLite and PostgreSQL) and multi-trainer tests
	$(GO) test $(GO_TEST_FLAGS) ./internal/database/ ./server/predlog/ ./server/feedback/ ./train/jobs/

.PHONY: bench-scale
bench-scale: deps pg-deps ## prediction log on PostgreSQL vs SQLite: writer rows/s, and serve req/s at c=64 with every feature on vs the log off (~5 min; not in make test)
	$(GO) test -run '^$$' -bench 'WriteBatch(Postgres)?$$/16xfp32/ordered' -benchtime 100x ./server/predlog/
	$(GO) test -run '^$$' -bench 'ScalePredictionLog' -benchtime 40000x -timeout 30m ./internal/e2e/
