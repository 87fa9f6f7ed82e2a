package predlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-ml/flywheel/internal/validate"
)

// Config tunes the prediction log.
type Config struct {
	// QueueSize is the number of entries waiting to be written; when the
	// queue is full new entries are dropped (and counted), never waited for.
	QueueSize int `yaml:"queue_size"`
	// BatchSize is the most entries written in one transaction.
	BatchSize int `yaml:"batch_size"`
	// FlushInterval is the longest an entry waits before its batch is written.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// SampleRate is the share of predictions logged, in (0, 1].
	SampleRate float64 `yaml:"sample_rate"`
	// MaxAge deletes predictions older than this (0 keeps them).
	MaxAge time.Duration `yaml:"max_age"`
	// MaxRows keeps at most this many predictions, the newest (0: no limit).
	MaxRows int64 `yaml:"max_rows"`
	// LabelMaxAge deletes feedback labels received longer ago than this
	// (0 keeps them): labels are what the trainer retrains on, and a label
	// feed must not grow the database without end.
	LabelMaxAge time.Duration `yaml:"label_max_age"`
	// RetentionInterval is how often retention runs.
	RetentionInterval time.Duration `yaml:"retention_interval"`
	// WriteTimeout bounds one batch write (also during the shutdown drain).
	WriteTimeout time.Duration `yaml:"write_timeout"`
}

// DefaultConfig: a queue of 65,536 entries, batches of 1,024 every 100ms,
// every prediction logged, 30 days / 5 million rows kept, pruned each minute.
func DefaultConfig() Config {
	return Config{
		QueueSize:         65536,
		BatchSize:         1024,
		FlushInterval:     100 * time.Millisecond,
		SampleRate:        1,
		MaxAge:            30 * 24 * time.Hour,
		MaxRows:           5_000_000,
		LabelMaxAge:       400 * 24 * time.Hour,
		RetentionInterval: time.Minute,
		WriteTimeout:      30 * time.Second,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var v validate.Errors
	v.If(c.QueueSize < 1, "queue_size must be positive, got %d", c.QueueSize)
	v.If(c.BatchSize < 1, "batch_size must be positive, got %d", c.BatchSize)
	v.If(c.FlushInterval <= 0, "flush_interval must be positive, got %s", c.FlushInterval)
	v.If(!(c.SampleRate > 0 && c.SampleRate <= 1), "sample_rate must be in (0, 1], got %g", c.SampleRate)
	v.If(c.MaxAge < 0, "max_age must not be negative, got %s", c.MaxAge)
	v.If(c.MaxRows < 0, "max_rows must not be negative, got %d", c.MaxRows)
	v.If(c.LabelMaxAge < 0, "label_max_age must not be negative, got %s", c.LabelMaxAge)
	v.If(c.RetentionInterval <= 0, "retention_interval must be positive, got %s", c.RetentionInterval)
	v.If(c.WriteTimeout <= 0, "write_timeout must be positive, got %s", c.WriteTimeout)
	return v.Err("")
}

// Entry is one predicted row. The log keeps the slices and maps it is given:
// callers must not modify them after Record (FeatureNames is only read, so
// a card's shared slice is fine).
type Entry struct {
	ID      string
	Time    time.Time // zero: the time Record is called
	Model   string
	Version int
	// Parameters are the request's parameters (string, number or bool values).
	Parameters map[string]any
	// FeatureNames names the features (from the model card); nil names them
	// "x0", "x1", ….
	FeatureNames []string
	Features     []float64
	// Outputs are the row's output values; the first is the prediction.
	Outputs []float64
	// Features32 and Outputs32 replace Features and Outputs for FP32
	// tensors: the served tensors are logged as they are, without a
	// widening copy on the request path.
	Features32 []float32
	Outputs32  []float32
}

func (e *Entry) features() values {
	if e.Features32 != nil {
		return values{f32: e.Features32}
	}
	return values{f64: e.Features}
}

func (e *Entry) outputs() values {
	if e.Outputs32 != nil {
		return values{f32: e.Outputs32}
	}
	return values{f64: e.Outputs}
}

// encode returns the entry's columns: parameters as JSON, features and
// outputs packed (appended to fbuf and obuf, which it returns for reuse),
// and the prediction.
func (e *Entry) encode(fbuf, obuf []byte) (params, features, outputs, pred any, _, _ []byte, err error) {
	if len(e.Parameters) > 0 {
		b, err := json.Marshal(e.Parameters)
		if err != nil {
			return nil, nil, nil, nil, fbuf, obuf, fmt.Errorf("parameters: %w", err)
		}
		params = string(b)
	}
	if f := e.features(); f.len() > 0 {
		fbuf = appendPacked(fbuf[:0], f)
		features = fbuf
	}
	if o := e.outputs(); o.len() > 0 {
		obuf = appendPacked(obuf[:0], o)
		outputs = obuf
		pred = finite(o.at(0))
	}
	return params, features, outputs, pred, fbuf, obuf, nil
}

// featureName is the name of feature i: the card's, or "x<i>".
func featureName(names []string, i int) string {
	if i < len(names) && names[i] != "" {
		return names[i]
	}
	return "x" + strconv.Itoa(i)
}

// finite maps NaN and ±Inf (which JSON cannot carry) to 0.
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// Options are the dependencies of a Log.
type Options struct {
	Config Config
	Store  *Store
	// Registerer receives the log's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now and Sample default to time.Now and rand.Float64.
	Now    func() time.Time
	Sample func() float64
}

// Log is the asynchronous writer. Record never blocks; Run owns the writing.
type Log struct {
	cfg    Config
	store  *Store
	logger *slog.Logger
	now    func() time.Time
	sample func() float64

	queue   chan Entry
	flushes chan chan error

	dropped    prometheus.Counter
	written    prometheus.Counter
	failed     prometheus.Counter
	pruned     prometheus.Counter
	dropsSince atomic.Int64
	lastWarn   atomic.Int64 // Unix nanos of the last "dropping" warning
	warnEvery  time.Duration
	runOnce    sync.Mutex
}

// New builds a Log over store.
func New(opts Options) (*Log, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, fmt.Errorf("prediction log config: %w", err)
	}
	if opts.Store == nil {
		return nil, errors.New("prediction log: no store")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	l := &Log{
		cfg:       opts.Config,
		store:     opts.Store,
		logger:    logger.With("component", "predlog"),
		now:       opts.Now,
		sample:    opts.Sample,
		queue:     make(chan Entry, opts.Config.QueueSize),
		flushes:   make(chan chan error),
		warnEvery: 10 * time.Second,
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flywheel_predlog_dropped_total",
			Help: "Predictions not logged because the prediction log queue was full.",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flywheel_predlog_written_total",
			Help: "Predictions written to the prediction log.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flywheel_predlog_write_failures_total",
			Help: "Predictions lost because writing their batch failed.",
		}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flywheel_predlog_pruned_total",
			Help: "Predictions deleted by retention (max age, max rows).",
		}),
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.sample == nil {
		l.sample = rand.Float64
	}
	if r := opts.Registerer; r != nil {
		queueLen := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flywheel_predlog_queue_length",
			Help: "Predictions waiting in the prediction log queue.",
		}, func() float64 { return float64(len(l.queue)) })
		for _, c := range []prometheus.Collector{l.dropped, l.written, l.failed, l.pruned, queueLen} {
			if err := r.Register(c); err != nil {
				return nil, fmt.Errorf("registering prediction log metrics: %w", err)
			}
		}
	}
	return l, nil
}

// Record queues e for writing and reports whether it was queued. It never
// blocks: a prediction not sampled is skipped, and when the queue is full
// the entry is dropped, counted in flywheel_predlog_dropped_total and
// reported by a warning at most every 10 seconds.
func (l *Log) Record(e Entry) bool {
	if l.cfg.SampleRate < 1 && l.sample() >= l.cfg.SampleRate {
		return false
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	select {
	case l.queue <- e:
		return true
	default:
	}
	l.dropped.Inc()
	l.dropsSince.Add(1)
	now := time.Now().UnixNano()
	last := l.lastWarn.Load()
	if now-last >= int64(l.warnEvery) && l.lastWarn.CompareAndSwap(last, now) {
		l.logger.Warn("prediction log queue full, dropping predictions",
			"dropped", l.dropsSince.Swap(0), "queue_size", l.cfg.QueueSize)
	}
	return false
}

// RowID is the id of row i of a request with id that predicted rows rows:
// the request id itself for a single row, "<id>/<i>" (from 0) otherwise.
// Feedback for a row of a batch request uses this id.
func RowID(id string, rows, i int) string {
	if rows == 1 {
		return id
	}
	return id + "/" + strconv.Itoa(i)
}

// RecordRows records each row of a request: features holds rows × n values
// and outputs rows × k values, both row-major (as served tensors are); row i
// gets id RowID(e.ID, rows, i). The rows share e's other fields and are
// views of the given slices (no copy). It returns how many rows were queued.
func (l *Log) RecordRows(e Entry, rows int) int {
	if rows <= 0 {
		return 0
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	f, o, id := e.features(), e.outputs(), e.ID
	nf, no := f.len()/rows, o.len()/rows
	queued := 0
	for i := range rows {
		e.ID = RowID(id, rows, i)
		e.Features, e.Features32 = split(f.slice(i*nf, (i+1)*nf))
		e.Outputs, e.Outputs32 = split(o.slice(i*no, (i+1)*no))
		if l.Record(e) {
			queued++
		}
	}
	return queued
}

func split(v values) ([]float64, []float32) { return v.f64, v.f32 }

// Flush waits until every entry recorded before the call is committed (or
// failed), e.g. before feedback looks up a prediction that was just made.
// It needs Run to be running and returns ctx's error when ctx ends first.
func (l *Log) Flush(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case l.flushes <- done:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run writes the queued entries every FlushInterval, in transactions of at
// most BatchSize entries, and applies retention every RetentionInterval,
// until ctx is done; then it writes what is still queued and returns.
func (l *Log) Run(ctx context.Context) error {
	if !l.runOnce.TryLock() {
		return errors.New("prediction log: Run called twice")
	}
	defer l.runOnce.Unlock()
	flush := time.NewTicker(l.cfg.FlushInterval)
	defer flush.Stop()
	// Retention runs beside the writer, not in its loop: a pass over millions
	// of rows takes seconds, and a writer waiting for it lets the queue fill
	// (RSS rose by a third during the first pass of a 5-minute load run).
	// Its chunked transactions and the writer's batches take turns on the
	// store's write lock.
	var pruning sync.WaitGroup
	defer pruning.Wait()
	pruneCtx, stopPruning := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPruning()
	pruning.Add(1)
	go func() {
		defer pruning.Done()
		l.pruneEvery(pruneCtx)
	}()

	batch := make([]Entry, 0, l.cfg.BatchSize)
	write := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := l.write(batch)
		clear(batch)
		batch = batch[:0]
		return err
	}
	// drain writes everything queued right now.
	drain := func() error {
		var errs []error
		for {
			select {
			case e := <-l.queue:
				batch = append(batch, e)
				if len(batch) == cap(batch) {
					errs = append(errs, write())
				}
			default:
				errs = append(errs, write())
				return errors.Join(errs...)
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			stopPruning()
			pruning.Wait()
			n := len(l.queue) + len(batch)
			err := drain()
			l.logger.Info("prediction log drained", "entries", n, "err", err)
			return nil
		case <-flush.C:
			// Drain on a timer rather than waking up for every entry: a
			// wake-up per prediction costs the request path more than the
			// writing itself.
			drain()
		case done := <-l.flushes:
			done <- drain()
		}
	}
}

func (l *Log) write(batch []Entry) error {
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.WriteTimeout)
	defer cancel()
	if err := l.store.insert(ctx, batch); err != nil {
		l.failed.Add(float64(len(batch)))
		l.logger.Error("writing prediction log batch", "entries", len(batch), "err", err)
		return err
	}
	l.written.Add(float64(len(batch)))
	return nil
}

// pruneEvery applies retention now and then every RetentionInterval until
// ctx ends.
func (l *Log) pruneEvery(ctx context.Context) {
	if l.cfg.MaxAge == 0 && l.cfg.MaxRows == 0 && l.cfg.LabelMaxAge == 0 {
		return
	}
	t := time.NewTicker(l.cfg.RetentionInterval)
	defer t.Stop()
	for {
		l.prune(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (l *Log) prune(ctx context.Context) {
	// A pass may take a while at high rates (it pauses between chunks); the
	// next one continues where it stopped.
	ctx, cancel := context.WithTimeout(ctx, max(l.cfg.WriteTimeout, l.cfg.RetentionInterval))
	defer cancel()
	n, err := l.store.prune(ctx, l.now(), l.cfg.MaxAge, l.cfg.MaxRows, 0)
	l.pruned.Add(float64(n)) // committed chunks count even when a later one failed
	if err == nil && l.cfg.LabelMaxAge > 0 {
		var labels int64
		labels, err = l.store.PruneLabels(ctx, l.now().Add(-l.cfg.LabelMaxAge))
		if labels > 0 {
			l.logger.Info("label retention", "deleted", labels, "max_age", l.cfg.LabelMaxAge)
		}
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		l.logger.Error("applying prediction log retention", "err", err)
		return
	}
	if n > 0 {
		l.logger.Debug("prediction log retention", "deleted", n)
	}
}
