# Monitoring configuration checks (issue 5): Prometheus config and rules,
# promtool rule unit tests, Alertmanager config and routing.
TEST_TARGETS += test-monitoring

MON_DIR := monitoring
# alert name = receiver it must reach (label set as alerts.yml attaches it)
MON_ROUTES := \
	'trainer alertname=FeatureDrift action=retrain severity=warning model=ridership version=1' \
	'trainer alertname=ModelErrorHigh action=retrain severity=warning model=ridership version=1' \
	'default alertname=InferenceLatencyHigh severity=warning model=ridership version=1' \
	'default alertname=InferenceErrorRateHigh severity=critical job=serve' \
	'default alertname=ModelLoadFailed severity=warning model=ridership' \
	'default alertname=NoModelReady severity=critical job=serve' \
	'default alertname=PredictionLogDropping severity=warning job=serve' \
	'default alertname=RetrainJobFailed severity=warning job=trainer' \
	'default alertname=ModelRolledBack severity=warning job=trainer model=ridership'

.PHONY: test-monitoring monitoring-token
test-monitoring: ## promtool/amtool checks and rule unit tests for monitoring/
	@set -euo pipefail; start=$$(date +%s%N); \
	promtool check config $(MON_DIR)/prometheus.yml; \
	promtool check rules $(MON_DIR)/alerts.yml; \
	promtool test rules $(MON_DIR)/tests/*.yml; \
	amtool check-config $(MON_DIR)/alertmanager.yml; \
	got=$$(grep -c '^      - alert: ' $(MON_DIR)/alerts.yml); \
	[ "$$got" = 9 ] || { echo "alerts.yml has $$got alerts, routes are tested for 9"; exit 1; }; \
	for r in $(MON_ROUTES); do \
	  set -- $$r; want=$$1; shift; \
	  grep -q "^      - alert: $${1#alertname=}$$" $(MON_DIR)/alerts.yml || { echo "alert $${1#alertname=} not in alerts.yml"; exit 1; }; \
	  amtool config routes test --config.file=$(MON_DIR)/alertmanager.yml --verify.receivers=$$want "$$@" 2>/dev/null >/dev/null \
	    || { echo "route: $$* does not reach $$want only"; exit 1; }; \
	  echo "route: $$1 -> $$want"; \
	done; \
	echo "test-monitoring: ok in $$(( ($$(date +%s%N) - start) / 1000000 )) ms"

monitoring-token: $(MON_DIR)/secrets/trainer-token ## random bearer token shared by Alertmanager and the trainer

$(MON_DIR)/secrets/trainer-token:
	@mkdir -p $(@D); umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > $@; echo "wrote $@"

# End-to-end monitoring tests (real serve, real Prometheus); also part of test-go.
.PHONY: test-monitoring-e2e
test-monitoring-e2e: deps ## drift alert in a real Prometheus, drift of the ridership card, 20k predictions + feedback, dashboard vs live scrapes
	$(GO) test -count=1 -v -run 'TestDriftAlertFiresInPrometheus|TestDriftOfRidershipCard|TestLoadPredictionsWithFeedbackThroughServe|TestDashboardMetricsScraped' ./internal/e2e/
