package drift

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/internal/validate"
)

// Config tunes drift detection.
type Config struct {
	// Window is the number of most recent rows per served version that PSI
	// is computed over.
	Window int `yaml:"window"`
	// MinRows is the number of rows a window needs before PSI is exported;
	// a handful of rows after a restart would otherwise look like drift.
	MinRows int `yaml:"min_rows"`
	// Epsilon replaces empty bin proportions (see PSI).
	Epsilon float64 `yaml:"epsilon"`
	// QueueSize is the number of Observe calls buffered for the Run loop;
	// when it is full, observations are dropped and counted.
	QueueSize int `yaml:"queue_size"`
}

// DefaultConfig returns the defaults: a window of 1,000 rows, PSI from 100
// rows on, epsilon 1e-4, a queue of 4,096 observations.
func DefaultConfig() Config {
	return Config{Window: 1000, MinRows: 100, Epsilon: DefaultEpsilon, QueueSize: 4096}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var v validate.Errors
	v.If(c.Window < 1, "window must be positive, got %d", c.Window)
	v.If(c.MinRows < 1 || c.MinRows > c.Window, "min_rows must be between 1 and window (%d), got %d", c.Window, c.MinRows)
	v.If(!(c.Epsilon > 0 && c.Epsilon < 0.01), "epsilon must be in (0, 0.01), got %g", c.Epsilon)
	v.If(c.QueueSize < 1, "queue_size must be positive, got %d", c.QueueSize)
	return v.Err("")
}

// Options are the dependencies of a Monitor.
type Options struct {
	Config Config
	// Registerer receives the drift gauges; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Monitor keeps a sliding window per served model version and computes PSI
// against the version's reference. Observe never blocks; Run applies the
// observations; PSI is computed from bin counts maintained incrementally, so
// a scrape costs O(features × bins).
type Monitor struct {
	cfg    Config
	logger *slog.Logger
	queue  chan observation

	mu       sync.RWMutex
	versions map[key]*window

	dropped  prometheus.Counter
	featDesc *prometheus.Desc
	predDesc *prometheus.Desc
	rowsDesc *prometheus.Desc
}

type key struct {
	model   string
	version int
}

type observation struct {
	w      *window
	rows   int
	inputs []float32 // rows × len(w.features)
	preds  []float32 // rows × k, first column used
}

// window is the state of one served version.
type window struct {
	model    string
	version  string
	features []string
	refs     []*modelrepo.Histogram // per feature, nil when the card has none
	pred     *modelrepo.Histogram
	reason   string // why drift is disabled, "" when enabled

	mu     sync.Mutex
	cols   int         // len(features)+1, the last column is the prediction
	ring   []uint8     // Window × cols bin indices; noBin when unknown
	next   int         // next ring row to write
	rows   int         // rows in the ring
	counts [][]int     // per column, per bin
	edges  [][]float64 // per column, the reference edges rounded to float32
}

const noBin = math.MaxUint8

// New builds a Monitor and registers its metrics.
func New(opts Options) (*Monitor, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, fmt.Errorf("drift config: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := &Monitor{
		cfg:      opts.Config,
		logger:   logger.With("component", "drift"),
		queue:    make(chan observation, opts.Config.QueueSize),
		versions: map[key]*window{},
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flywheel_drift_observations_dropped_total",
			Help: "Observations dropped because the drift queue was full.",
		}),
		featDesc: prometheus.NewDesc("flywheel_feature_drift_psi",
			"Population Stability Index of each input feature: the recent window against the model card's reference.",
			[]string{"model", "version", "feature"}, nil),
		predDesc: prometheus.NewDesc("flywheel_prediction_drift_psi",
			"Population Stability Index of the prediction: the recent window against the model card's reference.",
			[]string{"model", "version"}, nil),
		rowsDesc: prometheus.NewDesc("flywheel_drift_window_rows",
			"Rows in the drift window of each served version with a reference.",
			[]string{"model", "version"}, nil),
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(m.dropped); err != nil {
			return nil, fmt.Errorf("registering drift metrics: %w", err)
		}
		if err := opts.Registerer.Register(collector{m}); err != nil {
			return nil, fmt.Errorf("registering drift metrics: %w", err)
		}
	}
	return m, nil
}

// Status says whether drift is measured for a version and its current PSI
// values; servers put it in the version's metadata.
type Status struct {
	Enabled bool   `json:"enabled"`
	Reason  string `json:"reason,omitempty"` // why not enabled
	Window  int    `json:"window"`           // configured window size
	Rows    int    `json:"rows"`             // rows in the window
	// Features and Prediction are set once the window holds MinRows rows.
	Features   map[string]float64 `json:"features,omitempty"`
	Prediction *float64           `json:"prediction,omitempty"`
}

// Add starts measuring drift for a served version. features names the
// columns of the model's input in order; ref is the card's reference (nil
// when the card has none: the version is tracked but exports no drift, and
// its Status says so). Adding a version again resets its window.
func (m *Monitor) Add(model string, version int, features []string, ref *modelrepo.Reference) Status {
	w := &window{model: model, version: strconv.Itoa(version), features: append([]string(nil), features...)}
	switch {
	case ref == nil:
		w.reason = "the model card has no reference distribution"
	case len(features) == 0:
		w.reason = "the model card names no input features"
	default:
		w.refs = make([]*modelrepo.Histogram, len(features))
		n := 0
		for i, f := range features {
			if h, ok := ref.Features[f]; ok && usable(h) {
				w.refs[i] = &h
				n++
			}
		}
		if ref.Prediction != nil && usable(*ref.Prediction) {
			w.pred = ref.Prediction
		}
		if n == 0 && w.pred == nil {
			w.reason = "the reference covers none of the input features"
			w.refs = nil
		}
	}
	if w.reason == "" {
		w.cols = len(features) + 1
		w.ring = make([]uint8, m.cfg.Window*w.cols)
		w.counts = make([][]int, w.cols)
		w.edges = make([][]float64, w.cols)
		for i := range w.cols {
			h := w.hist(i)
			if h == nil {
				continue
			}
			w.counts[i] = make([]int, len(h.Proportions))
			// Served values are float32: round the edges the same way, so
			// a value equal to an edge in the training data (float64) lands
			// in the same bin after the conversion (rounding is monotonic).
			w.edges[i] = make([]float64, len(h.Edges))
			for j, e := range h.Edges {
				w.edges[i][j] = float64(float32(e))
			}
		}
	}
	m.mu.Lock()
	m.versions[key{model, version}] = w
	m.mu.Unlock()
	if w.reason != "" {
		m.logger.Info("drift disabled for model version", "model", model, "version", version, "reason", w.reason)
	}
	st, _ := m.Status(model, version)
	return st
}

// usable reports whether a reference histogram can be binned into.
func usable(h modelrepo.Histogram) bool {
	return h.Validate() == nil && len(h.Proportions) < noBin
}

// Remove stops measuring drift for a version (it is no longer served); its
// gauges disappear from the next scrape.
func (m *Monitor) Remove(model string, version int) {
	m.mu.Lock()
	delete(m.versions, key{model, version})
	m.mu.Unlock()
}

// Observe records served rows of a version: inputs is row-major with
// len(features) values per row, predictions holds one or more values per row
// (the first is used). It copies what it needs and never blocks: when the
// queue is full the observation is dropped and counted. It reports whether
// the rows were queued; rows of unknown versions or versions without a
// reference are ignored.
func (m *Monitor) Observe(model string, version int, inputs, predictions []float32) bool {
	w, rows := m.rows(model, version, len(inputs))
	if w == nil {
		return false
	}
	o := observation{w: w, rows: rows, inputs: append([]float32(nil), inputs...)}
	if len(predictions) >= rows {
		o.preds = append([]float32(nil), predictions...)
	}
	return m.enqueue(o)
}

// ObserveFloat64 is Observe for FP64 inputs and predictions.
func (m *Monitor) ObserveFloat64(model string, version int, inputs, predictions []float64) bool {
	w, rows := m.rows(model, version, len(inputs))
	if w == nil {
		return false
	}
	o := observation{w: w, rows: rows, inputs: make([]float32, len(inputs))}
	for i, v := range inputs {
		o.inputs[i] = float32(v)
	}
	if len(predictions) >= rows {
		o.preds = make([]float32, len(predictions))
		for i, v := range predictions {
			o.preds[i] = float32(v)
		}
	}
	return m.enqueue(o)
}

// rows returns the window of a monitored version (one with a reference)
// and how many whole rows n input values make; nil when the version is not
// monitored or n is not a positive multiple of its features.
func (m *Monitor) rows(model string, version, n int) (*window, int) {
	w := m.lookup(model, version)
	if w == nil || w.reason != "" {
		return nil, 0
	}
	rows := n / len(w.features)
	if rows == 0 || rows*len(w.features) != n {
		return nil, 0
	}
	return w, rows
}

func (m *Monitor) lookup(model string, version int) *window {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.versions[key{model, version}]
}

func (m *Monitor) enqueue(o observation) bool {
	select {
	case m.queue <- o:
		return true
	default:
		m.dropped.Inc()
		return false
	}
}

// Run applies queued observations to the windows until ctx is done.
func (m *Monitor) Run(ctx context.Context) error {
	// Apply on a timer rather than waking up for every observation: a
	// wake-up per request costs the request path more than the binning.
	tick := time.NewTicker(applyInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			m.Sync()
		}
	}
}

// applyInterval is how often Run applies queued observations.
const applyInterval = 20 * time.Millisecond

// Sync applies every observation queued so far; tests and shutdown use it
// when Run is not running.
func (m *Monitor) Sync() {
	for {
		select {
		case o := <-m.queue:
			o.w.add(o)
		default:
			return
		}
	}
}

// hist returns the reference of column i (the last column is the prediction).
func (w *window) hist(i int) *modelrepo.Histogram {
	if i == len(w.features) {
		return w.pred
	}
	return w.refs[i]
}

func (w *window) add(o observation) {
	nf := len(w.features)
	stride := 0
	if o.preds != nil {
		stride = len(o.preds) / o.rows
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	window := len(w.ring) / w.cols
	for r := range o.rows {
		row := w.ring[w.next*w.cols : (w.next+1)*w.cols]
		if w.rows == window { // evict the oldest row, which next points at
			for c, b := range row {
				if b != noBin {
					w.counts[c][b]--
				}
			}
		} else {
			w.rows++
		}
		for c := range w.cols {
			h := w.hist(c)
			var v float64
			switch {
			case h == nil:
				row[c] = noBin
				continue
			case c < nf:
				v = float64(o.inputs[r*nf+c])
			case stride > 0:
				v = float64(o.preds[r*stride])
			default:
				row[c] = noBin
				continue
			}
			b := modelrepo.Bin(w.edges[c], v)
			row[c] = uint8(b)
			w.counts[c][b]++
		}
		w.next = (w.next + 1) % window
	}
}

// psi computes the PSI of every column with a reference; ok is false for
// columns without a reference or observations.
func (w *window) psi(eps float64) (rows int, values []float64, ok []bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	values = make([]float64, w.cols)
	ok = make([]bool, w.cols)
	for c := range w.cols {
		h := w.hist(c)
		if h == nil {
			continue
		}
		total := 0
		for _, n := range w.counts[c] {
			total += n
		}
		if total == 0 {
			continue
		}
		actual := make([]float64, len(w.counts[c]))
		for i, n := range w.counts[c] {
			actual[i] = float64(n) / float64(total)
		}
		values[c] = PSI(h.Proportions, actual, eps)
		ok[c] = true
	}
	return w.rows, values, ok
}

// Status returns the drift status of a version; false when it is unknown.
func (m *Monitor) Status(model string, version int) (Status, bool) {
	w := m.lookup(model, version)
	if w == nil {
		return Status{}, false
	}
	st := Status{Enabled: w.reason == "", Reason: w.reason, Window: m.cfg.Window}
	if !st.Enabled {
		return st, true
	}
	rows, values, ok := w.psi(m.cfg.Epsilon)
	st.Rows = rows
	if rows < m.cfg.MinRows {
		return st, true
	}
	st.Features = map[string]float64{}
	for i, f := range w.features {
		if ok[i] {
			st.Features[f] = values[i]
		}
	}
	if p := len(w.features); ok[p] {
		v := values[p]
		st.Prediction = &v
	}
	return st, true
}

// collector exports the gauges computed at scrape time.
type collector struct{ m *Monitor }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.m.featDesc
	ch <- c.m.predDesc
	ch <- c.m.rowsDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	m.mu.RLock()
	ws := make([]*window, 0, len(m.versions))
	for _, w := range m.versions {
		if w.reason == "" {
			ws = append(ws, w)
		}
	}
	m.mu.RUnlock()
	sort.Slice(ws, func(i, j int) bool {
		if ws[i].model != ws[j].model {
			return ws[i].model < ws[j].model
		}
		return ws[i].version < ws[j].version
	})
	for _, w := range ws {
		rows, values, ok := w.psi(m.cfg.Epsilon)
		ch <- prometheus.MustNewConstMetric(m.rowsDesc, prometheus.GaugeValue, float64(rows), w.model, w.version)
		if rows < m.cfg.MinRows {
			continue
		}
		for i, f := range w.features {
			if ok[i] {
				ch <- prometheus.MustNewConstMetric(m.featDesc, prometheus.GaugeValue, values[i], w.model, w.version, f)
			}
		}
		if p := len(w.features); ok[p] {
			ch <- prometheus.MustNewConstMetric(m.predDesc, prometheus.GaugeValue, values[p], w.model, w.version)
		}
	}
}
