# Delivery (issue 8): container image, compose stack, workflows, Kubernetes.
# The Go tests in deploy/ (Dockerfile, compose, manifests) run with test-go;
# test-ship lints the GitHub workflows with actionlint.
TEST_TARGETS += test-ship

ACTIONLINT_VERSION := v1.7.11
TOOLS_BIN  := $(CURDIR)/bin/tools
ACTIONLINT := $(TOOLS_BIN)/actionlint-$(ACTIONLINT_VERSION)
IMAGE      ?= ghcr.io/flywheel-ml/flywheel:dev
POSTGRES_PASSWORD_SECRET := deploy/secrets/postgres-password
DATABASE_URL_SECRET := deploy/secrets/database-url
SHIP_SECRETS := deploy/secrets/admin-token deploy/secrets/grafana-admin-password $(POSTGRES_PASSWORD_SECRET) \
                monitoring/secrets/trainer-token

.PHONY: test-ship actionlint image secrets
test-ship: $(ACTIONLINT) ## lint .github/workflows with actionlint (deploy/ tests run in test-go)
	@start=$$(date +%s%N); \
	$(ACTIONLINT) -no-color && \
	echo "test-ship: actionlint $(ACTIONLINT_VERSION) ok in $$(( ($$(date +%s%N) - start) / 1000000 )) ms"

actionlint: $(ACTIONLINT) ## install actionlint into bin/tools

$(ACTIONLINT):
	@set -euo pipefail; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	GOBIN="$$tmp" $(GO) install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION); \
	mkdir -p $(TOOLS_BIN); mv "$$tmp/actionlint" $@; echo "installed $@"

image: ## build the container image (needs Docker with BuildKit)
	docker build --build-arg VERSION=$$(git describe --tags --always --dirty 2>/dev/null || echo dev) \
	  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	  --build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) -t $(IMAGE) .

# Token files for docker compose, random, created only when missing (rotate:
# delete one and run again). Directories 0700; files 0644 so the containers'
# non-root users (flywheel 10001, Alertmanager nobody, Grafana 472) can read
# the bind-mounted secret. The scaled stack's database URL
# (docker-compose.postgres.yml) holds the PostgreSQL password and is
# rewritten when it does not match it (PostgreSQL keeps the password it was
# initialised with: rotating it needs ALTER ROLE, or a new postgres volume).
secrets: ## create missing compose token files (deploy/secrets, monitoring/secrets) and the database URL
	@set -euo pipefail; for f in $(SHIP_SECRETS); do \
	  mkdir -p $$(dirname $$f); chmod 0700 $$(dirname $$f); \
	  if [ ! -s $$f ]; then head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > $$f; echo "wrote $$f"; fi; \
	  chmod 0644 $$f; \
	done; \
	url="postgres://flywheel:$$(cat $(POSTGRES_PASSWORD_SECRET))@postgres:5432/flywheel?sslmode=disable"; \
	if [ "$$(cat $(DATABASE_URL_SECRET) 2>/dev/null)" != "$$url" ]; then \
	  printf '%s' "$$url" > $(DATABASE_URL_SECRET); echo "wrote $(DATABASE_URL_SECRET)"; fi; \
	chmod 0644 $(DATABASE_URL_SECRET)
