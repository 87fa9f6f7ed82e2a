// Package metrics holds the Prometheus collectors of the inference server.
// They are registered on the Registerer passed to New, never on the default
// registry; all methods are safe on a nil *Metrics.
package metrics

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// States a model version can be in (the state label).
var States = []string{"READY", "UNAVAILABLE", "LOADING", "UNLOADING"}

// durationBuckets span 10 µs to ~10 s.
var durationBuckets = prometheus.ExponentialBuckets(10e-6, 2.5, 16)

// overheadBuckets span 1 µs to ~7.5 ms in steps of 20 %, fine enough to read
// a median of tens of microseconds.
var overheadBuckets = prometheus.ExponentialBuckets(1e-6, 1.2, 50)

// Metrics are the serve collectors named in CONTRACTS.md.
type Metrics struct {
	Requests      *prometheus.CounterVec
	Rows          *prometheus.CounterVec
	Executions    *prometheus.CounterVec
	RequestTime   *prometheus.HistogramVec
	QueueTime     *prometheus.HistogramVec
	ComputeTime   *prometheus.HistogramVec
	Overhead      *prometheus.HistogramVec
	HTTPRequests  *prometheus.CounterVec
	HTTPDuration  *prometheus.HistogramVec
	VersionReady  *prometheus.GaugeVec
	VersionState  *prometheus.GaugeVec
	LoadAttempts  *prometheus.CounterVec
	collectorList []prometheus.Collector
	// inference caches the inference series of each model version: looking
	// up eight label sets per request cost more than the observations.
	inference sync.Map // versionKey → *inferenceSeries
}

type versionKey struct {
	model   string
	version int64
}

// inferenceSeries are the inference collectors' children of one version.
type inferenceSeries struct {
	success, failure, rows, executions prometheus.Counter
	request, queue, compute, overhead  prometheus.Observer
}

func (m *Metrics) series(model string, version int64) *inferenceSeries {
	k := versionKey{model, version}
	if s, ok := m.inference.Load(k); ok {
		return s.(*inferenceSeries)
	}
	v := ver(version)
	s := &inferenceSeries{
		success: m.Requests.WithLabelValues(model, v, outcome(true)), failure: m.Requests.WithLabelValues(model, v, outcome(false)),
		rows: m.Rows.WithLabelValues(model, v), executions: m.Executions.WithLabelValues(model, v),
		request: m.RequestTime.WithLabelValues(model, v), queue: m.QueueTime.WithLabelValues(model, v),
		compute: m.ComputeTime.WithLabelValues(model, v), overhead: m.Overhead.WithLabelValues(model, v),
	}
	got, _ := m.inference.LoadOrStore(k, s)
	return got.(*inferenceSeries)
}

// New creates the collectors and registers them on reg when it is not nil.
func New(reg prometheus.Registerer) *Metrics {
	mv := []string{"model", "version"}
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_inference_requests_total", Help: "Inference requests by model version and outcome (success or failure).",
		}, []string{"model", "version", "outcome"}),
		Rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_inference_rows_total", Help: "Inference rows (the first dimension of the inputs), the inference count.",
		}, mv),
		Executions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_inference_executions_total", Help: "Model session runs; rows/executions is the average batch size.",
		}, mv),
		RequestTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "flywheel_inference_request_duration_seconds", Help: "Time from decoding a request to its encoded answer.", Buckets: durationBuckets,
		}, mv),
		QueueTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "flywheel_inference_queue_duration_seconds", Help: "Time a request waited before its session run started.", Buckets: durationBuckets,
		}, mv),
		ComputeTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "flywheel_inference_compute_duration_seconds", Help: "Time spent in the model session run.", Buckets: durationBuckets,
		}, mv),
		Overhead: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "flywheel_inference_overhead_seconds", Help: "Per request, request duration minus session run time: decoding, queueing and hand-offs (fine buckets).", Buckets: overheadBuckets,
		}, mv),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_http_requests_total", Help: "HTTP requests by registered route, method and status code.",
		}, []string{"route", "method", "code"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "flywheel_http_request_duration_seconds", Help: "HTTP request duration by registered route and method.", Buckets: durationBuckets,
		}, []string{"route", "method"}),
		VersionReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flywheel_model_version_ready", Help: "1 when the model version serves requests, else 0.",
		}, mv),
		VersionState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flywheel_model_version_state", Help: "1 for the current state of a model version (READY, UNAVAILABLE, LOADING, UNLOADING).",
		}, []string{"model", "version", "state"}),
		LoadAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flywheel_model_load_attempts_total", Help: "Model version load attempts by outcome (success or failure).",
		}, []string{"model", "outcome"}),
	}
	m.collectorList = []prometheus.Collector{m.Requests, m.Rows, m.Executions, m.RequestTime, m.QueueTime, m.ComputeTime,
		m.Overhead, m.HTTPRequests, m.HTTPDuration, m.VersionReady, m.VersionState, m.LoadAttempts}
	if reg != nil {
		for _, c := range m.collectorList {
			reg.MustRegister(c)
		}
	}
	return m
}

func ver(v int64) string { return strconv.FormatInt(v, 10) }

// SetVersionState records a version's state: the ready gauge and one 1 among
// the state series (pre-initialised to 0 for the others).
func (m *Metrics) SetVersionState(model string, version int64, state string) {
	if m == nil {
		return
	}
	v := ver(version)
	ready := 0.0
	if state == "READY" {
		ready = 1
	}
	m.VersionReady.WithLabelValues(model, v).Set(ready)
	if ready == 1 { // pre-create the request outcomes at zero (see InitModel)
		m.Requests.WithLabelValues(model, v, "success")
		m.Requests.WithLabelValues(model, v, "failure")
	}
	for _, s := range States {
		val := 0.0
		if s == state {
			val = 1
		}
		m.VersionState.WithLabelValues(model, v, s).Set(val)
	}
}

// DeleteVersion drops the series of a version that left the repository.
func (m *Metrics) DeleteVersion(model string, version int64) {
	if m == nil {
		return
	}
	v := ver(version)
	m.VersionReady.DeleteLabelValues(model, v)
	for _, s := range States {
		m.VersionState.DeleteLabelValues(model, v, s)
	}
}

// InitModel pre-creates a model's load-attempt series at zero, so that
// alerts on increase() see the first failure.
func (m *Metrics) InitModel(model string) {
	if m == nil {
		return
	}
	m.LoadAttempts.WithLabelValues(model, "success")
	m.LoadAttempts.WithLabelValues(model, "failure")
}

// LoadAttempt counts a load attempt.
func (m *Metrics) LoadAttempt(model string, ok bool) {
	if m == nil {
		return
	}
	m.LoadAttempts.WithLabelValues(model, outcome(ok)).Inc()
}

func outcome(ok bool) string {
	if ok {
		return "success"
	}
	return "failure"
}

// Inference is the record of one inference request.
type Inference struct {
	Model      string
	Version    int64
	OK         bool
	Rows       int
	Executions int
	Request    float64 // seconds
	Queue      float64
	Compute    float64
}

// ObserveInference records one request's counters and durations. Failed
// requests only count as failures.
func (m *Metrics) ObserveInference(in Inference) {
	if m == nil {
		return
	}
	s := m.series(in.Model, in.Version)
	if !in.OK {
		s.failure.Inc()
		return
	}
	s.success.Inc()
	s.rows.Add(float64(in.Rows))
	s.executions.Add(float64(in.Executions))
	s.request.Observe(in.Request)
	s.queue.Observe(in.Queue)
	s.compute.Observe(in.Compute)
	s.overhead.Observe(max(in.Request-in.Compute, 0))
}

// ObserveHTTP records one HTTP request by its registered route.
func (m *Metrics) ObserveHTTP(route, method string, code int, seconds float64) {
	if m == nil {
		return
	}
	m.HTTPRequests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
	m.HTTPDuration.WithLabelValues(route, method).Observe(seconds)
}
