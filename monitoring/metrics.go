package monitoring

import "strings"

// IsMetricFamily reports whether name is one of the metric families that
// Flywheel's serve and trainer expose and that its alerts, dashboard and
// documents may name, or Prometheus's own `up`. Histograms count by base name.
func IsMetricFamily(name string) bool {
	switch name {
	case "up",
		// serve
		"flywheel_inference_requests_total",
		"flywheel_inference_rows_total",
		"flywheel_inference_executions_total",
		"flywheel_inference_request_duration_seconds",
		"flywheel_inference_queue_duration_seconds",
		"flywheel_inference_compute_duration_seconds",
		"flywheel_inference_overhead_seconds",
		"flywheel_http_requests_total",
		"flywheel_http_request_duration_seconds",
		"flywheel_model_version_ready",
		"flywheel_model_version_state",
		"flywheel_model_load_attempts_total",
		// monitor
		"flywheel_feature_drift_psi",
		"flywheel_prediction_drift_psi",
		"flywheel_drift_window_rows",
		"flywheel_feedback_labels_total",
		"flywheel_feedback_absolute_error_total",
		"flywheel_feedback_squared_error_total",
		"flywheel_feedback_correct_total",
		"flywheel_feedback_store_labels",
		"flywheel_feedback_store_absolute_error",
		"flywheel_feedback_store_squared_error",
		"flywheel_model_error_threshold",
		"flywheel_predlog_dropped_total",
		"flywheel_predlog_queue_length",
		"flywheel_predlog_written_total",
		// trainer
		"flywheel_trainer_jobs_total",
		"flywheel_trainer_step_duration_seconds",
		"flywheel_trainer_last_success_timestamp_seconds",
		"flywheel_trainer_alert_to_serving_seconds",
		"flywheel_trainer_queue_length",
		"flywheel_trainer_rollbacks_total",
		"flywheel_trainer_watch_rows":
		return true
	}
	return false
}

// IsMetric reports whether name is a metric family (IsMetricFamily) or one of
// a histogram family's series: <family>_bucket, _sum or _count.
func IsMetric(name string) bool {
	if IsMetricFamily(name) {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && IsMetricFamily(base) && strings.HasSuffix(base, "_seconds") {
			return true
		}
	}
	return false
}
