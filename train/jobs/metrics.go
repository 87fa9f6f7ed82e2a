package jobs

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the trainer's job metrics (flywheel_trainer_*).
type Metrics struct {
	jobs           *prometheus.CounterVec
	steps          *prometheus.HistogramVec
	lastSuccess    prometheus.Gauge
	alertToServing prometheus.Gauge
}

// NewMetrics registers the job metrics on reg; queueLength feeds
// flywheel_trainer_queue_length (nil for none).
func NewMetrics(reg prometheus.Registerer, queueLength func() float64) *Metrics {
	m := &Metrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_trainer_jobs_total",
			Help: "Retraining jobs finished, by outcome.",
		}, []string{"outcome"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flywheel_trainer_step_duration_seconds",
			Help:    "Duration of retraining pipeline steps.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800},
		}, []string{"step"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flywheel_trainer_last_success_timestamp_seconds",
			Help: "Unix time of the last job that promoted a model.",
		}),
		alertToServing: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flywheel_trainer_alert_to_serving_seconds",
			Help: "Seconds from the alert firing (or the manual request) to the new version serving, for the last promoted job.",
		}),
	}
	for _, o := range []string{StateSucceeded, StateRejected, StateFailed} {
		m.jobs.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(m.jobs, m.steps, m.lastSuccess, m.alertToServing)
		if queueLength != nil {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "flywheel_trainer_queue_length",
				Help: "Jobs queued and not yet running.",
			}, queueLength))
		}
	}
	return m
}

// InitSteps exports the step duration histograms of the named steps before
// any job ran (a histogram without series is invisible to dashboards).
func (m *Metrics) InitSteps(steps ...string) {
	if m == nil {
		return
	}
	for _, s := range steps {
		m.steps.WithLabelValues(s)
	}
}

func (m *Metrics) observeStep(step string, d time.Duration) {
	if m == nil {
		return
	}
	m.steps.WithLabelValues(step).Observe(d.Seconds())
}

func (m *Metrics) observeJob(j Job) {
	if m == nil {
		return
	}
	m.jobs.WithLabelValues(j.State).Inc()
	if j.State != StateSucceeded || j.FinishedAt == nil {
		return
	}
	m.lastSuccess.Set(float64(j.FinishedAt.UnixMilli()) / 1e3)
	from := j.CreatedAt
	if j.FiredAt != nil {
		from = *j.FiredAt
	}
	m.alertToServing.Set(j.FinishedAt.Sub(from).Seconds())
}
