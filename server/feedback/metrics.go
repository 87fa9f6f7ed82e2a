package feedback

import (
	"fmt"
	"math"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
)

// metrics are the live-quality series: PromQL divides the error sums by the
// label count over any window to get MAE and RMSE.
type metrics struct {
	labels    *prometheus.CounterVec
	absErr    *prometheus.CounterVec
	sqErr     *prometheus.CounterVec
	correct   *prometheus.CounterVec
	threshold *prometheus.GaugeVec
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	mv := []string{"model", "version"}
	m := &metrics{
		labels: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_feedback_labels_total",
			Help: "Feedback labels joined to a logged prediction (a corrected label counts again).",
		}, mv),
		absErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_feedback_absolute_error_total",
			Help: "Sum of |label - prediction| over feedback labels; divide by flywheel_feedback_labels_total for MAE.",
		}, mv),
		sqErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_feedback_squared_error_total",
			Help: "Sum of (label - prediction)^2 over feedback labels; divide by flywheel_feedback_labels_total for MSE.",
		}, mv),
		correct: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_feedback_correct_total",
			Help: "Feedback labels equal to the predicted class (classification models).",
		}, mv),
		threshold: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flywheel_model_error_threshold",
			Help: "Highest acceptable live error of a model version, from its model card's thresholds.",
		}, []string{"model", "version", "metric"}),
	}
	if r != nil {
		for _, c := range []prometheus.Collector{m.labels, m.absErr, m.sqErr, m.correct, m.threshold} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("registering feedback metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) addVersion(model, version string, c *modelrepo.Card) {
	m.labels.WithLabelValues(model, version)
	m.absErr.WithLabelValues(model, version)
	m.sqErr.WithLabelValues(model, version)
	if c != nil && c.Task == "classification" {
		m.correct.WithLabelValues(model, version)
	}
	if c != nil {
		for metric, v := range c.Thresholds {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				m.threshold.WithLabelValues(model, version, metric).Set(v)
			}
		}
	}
}

func (m *metrics) observe(model, version string, label, pred float64, classification bool) {
	d := label - pred
	m.labels.WithLabelValues(model, version).Inc()
	m.absErr.WithLabelValues(model, version).Add(math.Abs(d))
	m.sqErr.WithLabelValues(model, version).Add(d * d)
	if classification {
		c := m.correct.WithLabelValues(model, version)
		if label == pred {
			c.Inc()
		}
	}
}
