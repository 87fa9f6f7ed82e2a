// Package monitor wires in-service monitoring into the server: the
// prediction log, feedback labels and drift, fed by an api.Observer (every
// served prediction) and the repository's OnChange hook (versions entering
// and leaving service), with the feedback routes mounted on the server's app.
package monitor

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-ml/flywheel/internal/database"
	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/internal/validate"
	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/drift"
	"github.com/flywheel-ml/flywheel/server/feedback"
	"github.com/flywheel-ml/flywheel/server/predlog"
	"github.com/flywheel-ml/flywheel/server/repository"
	"github.com/flywheel-ml/flywheel/server/tensor"
)

// Config tunes the monitoring of serve.
type Config struct {
	// DB is the database of the prediction log and the feedback labels: a
	// SQLite file (its folder is created) or a postgres:// URL shared by
	// every replica; "" turns the prediction log, feedback and the
	// prediction lookup off (drift stays on).
	DB string `yaml:"db"`
	// BusyTimeout is the SQLite busy timeout of DB.
	BusyTimeout time.Duration  `yaml:"busy_timeout"`
	Predlog     predlog.Config `yaml:"predlog"`
	Drift       drift.Config   `yaml:"drift"`
	// FeedbackMaxItems limits the labels of one POST /v1/feedback.
	FeedbackMaxItems int `yaml:"feedback_max_items"`
	// StoreMetricsInterval is how often the store-wide live quality
	// (flywheel_feedback_store_*) is read from the labels table, on scrape;
	// 0 turns it off.
	StoreMetricsInterval time.Duration `yaml:"store_metrics_interval"`
	// FeedbackRate limits the labels per second of one client (IP), with
	// bursts of FeedbackMaxItems; negative: no limit.
	FeedbackRate float64 `yaml:"feedback_rate"`
}

// DefaultConfig: var/flywheel.db, a 5s busy timeout, the prediction log's
// and drift's defaults, 10,000 labels per feedback request.
func DefaultConfig() Config {
	return Config{DB: filepath.Join("var", "flywheel.db"), BusyTimeout: 5 * time.Second,
		Predlog: predlog.DefaultConfig(), Drift: drift.DefaultConfig(), FeedbackMaxItems: 10000, StoreMetricsInterval: 15 * time.Second, FeedbackRate: 1000}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var v validate.Errors
	if c.DB != "" {
		v.Add("prediction log", c.Predlog.Validate())
		v.If(c.BusyTimeout < 0, "busy_timeout must not be negative, got %s", c.BusyTimeout)
		v.If(c.StoreMetricsInterval < 0, "store_metrics_interval must not be negative, got %s", c.StoreMetricsInterval)
		v.If(c.FeedbackMaxItems < 1, "feedback_max_items must be positive, got %d", c.FeedbackMaxItems)
	}
	v.Add("drift", c.Drift.Validate())
	return v.Err("")
}

// Options are the dependencies of a Monitor.
type Options struct {
	Config Config
	// AdminToken guards GET /v1/feedback/export (empty: the export is off).
	AdminToken string
	// FeedbackToken guards POST /v1/feedback (empty: open); either token
	// reads GET /v1/predictions/{id} (both empty: open).
	FeedbackToken string
	// Registerer receives every monitoring metric; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Monitor is the running monitoring of serve.
type Monitor struct {
	db     *predlog.Store // nil when the prediction log is off
	log    *predlog.Log
	drift  *drift.Monitor
	store  *feedback.Store
	api    *feedback.API
	logger *slog.Logger

	mu    sync.RWMutex
	cards map[versionKey]*modelrepo.Card // every version served since start (lineage of old predictions)
}

type versionKey struct {
	model   string
	version int
}

// New opens the prediction database (when configured) and builds the
// prediction log, the feedback store and API, and the drift monitor. Run
// runs their actors; Close closes the database.
func New(ctx context.Context, o Options) (*Monitor, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, reg := o.Config, o.Registerer
	m := &Monitor{logger: logger, cards: map[versionKey]*modelrepo.Card{}}
	var err error
	m.drift, err = drift.New(drift.Options{Config: cfg.Drift, Registerer: reg, Logger: logger.With("component", "drift")})
	if err != nil {
		return nil, err
	}
	if cfg.DB == "" {
		logger.Info("prediction log off (no database): no feedback or prediction lookup", "component", "predlog")
		return m, nil
	}
	shared := database.IsPostgres(cfg.DB)
	if !shared {
		if err := os.MkdirAll(filepath.Dir(database.SQLitePath(cfg.DB)), 0o755); err != nil {
			return nil, fmt.Errorf("prediction database %s: %w", cfg.DB, err)
		}
	}
	m.db, err = predlog.Open(ctx, cfg.DB, cfg.BusyTimeout)
	if err != nil {
		return nil, fmt.Errorf("prediction database %s: %w", database.Redact(cfg.DB), err)
	}
	fail := func(err error) (*Monitor, error) {
		m.db.Close()
		return nil, err
	}
	m.log, err = predlog.New(predlog.Options{Config: cfg.Predlog, Store: m.db, Registerer: reg, Logger: logger.With("component", "predlog")})
	if err != nil {
		return fail(err)
	}
	var sharedWait time.Duration
	if shared {
		// A label may reach this replica before the replica that served its
		// prediction has written it.
		sharedWait = 2*cfg.Predlog.FlushInterval + time.Second
	}
	m.store, err = feedback.New(feedback.Options{DB: m.db, Log: m.log, Cards: m.card, Registerer: reg, Logger: logger.With("component", "feedback"),
		SharedWait: sharedWait})
	if err != nil {
		return fail(err)
	}
	if cfg.StoreMetricsInterval > 0 {
		if _, err := feedback.NewStoreMetrics(m.db, cfg.StoreMetricsInterval, reg, logger.With("component", "feedback")); err != nil {
			return fail(err)
		}
	}
	m.api, err = feedback.NewAPI(feedback.APIOptions{Store: m.store, AdminToken: o.AdminToken, FeedbackToken: o.FeedbackToken, Rate: cfg.FeedbackRate, MaxItems: cfg.FeedbackMaxItems, Logger: logger.With("component", "feedback")})
	if err != nil {
		return fail(err)
	}
	logger.Info("prediction log open", "component", "predlog", "db", m.db.Name(), "dialect", m.db.Dialect(), "sample_rate", cfg.Predlog.SampleRate,
		"queue", cfg.Predlog.QueueSize, "max_age", cfg.Predlog.MaxAge, "max_rows", cfg.Predlog.MaxRows)
	return m, nil
}

// card is the feedback store's card lookup.
// Version 0 (a label for a prediction made elsewhere, without a version)
// gives the newest card of the model.
func (m *Monitor) card(model string, version int) *modelrepo.Card {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if version > 0 {
		return m.cards[versionKey{model, version}]
	}
	var newest *modelrepo.Card
	best := 0
	for k, c := range m.cards {
		if k.model == model && k.version > best && c != nil {
			newest, best = c, k.version
		}
	}
	return newest
}

// OnChange is the repository hook: a version that starts serving gets a
// fresh drift window and its quality counters (at zero, with the card's
// thresholds); one that stops serving exports no drift any more.
func (m *Monitor) OnChange(c repository.Change) {
	v := int(c.Version)
	if !c.Ready {
		m.drift.Remove(c.Model, v)
		return
	}
	m.mu.Lock()
	m.cards[versionKey{c.Model, v}] = c.Card
	m.mu.Unlock()
	var names []string
	var ref *modelrepo.Reference
	if c.Card != nil {
		names, ref = c.Card.FeatureNames(), c.Card.Reference
	}
	st := m.drift.Add(c.Model, v, names, ref)
	if m.store != nil {
		m.store.AddVersion(c.Model, v, c.Card)
	}
	m.logger.Debug("monitoring model version", "component", "drift", "model", c.Model, "version", v, "drift", st.Enabled, "reason", st.Reason)
}

// Observe is the api.Observer: it feeds the drift monitor and the
// prediction log. Both copy or enqueue and never block. Row i of a request
// of n > 1 rows is logged as "<request id>/<i>".
func (m *Monitor) Observe(ob api.Observation) {
	if len(ob.Inputs) != 1 || len(ob.Outputs) == 0 {
		return // drift and the log describe one feature matrix
	}
	version := int(ob.Version)
	if in, ok := ob.Inputs[0].Data.([]float32); ok {
		out, _ := ob.Outputs[0].Data.([]float32)
		m.drift.Observe(ob.Model, version, in, out)
	} else if in, ok := ob.Inputs[0].Float64s(); ok {
		out, _ := ob.Outputs[0].Float64s()
		m.drift.ObserveFloat64(ob.Model, version, in, out)
	}
	if m.log == nil {
		return
	}
	e := predlog.Entry{ID: ob.RequestID, Time: ob.Time, Model: ob.Model, Version: version, Parameters: ob.Parameters}
	if !logValues(&e.Features, &e.Features32, ob.Inputs[0]) || !logValues(&e.Outputs, &e.Outputs32, ob.Outputs[0]) {
		return
	}
	if ob.Card != nil {
		e.FeatureNames = ob.Card.FeatureNames()
	}
	m.log.RecordRows(e, ob.Inputs[0].Rows())
}

// logValues sets the entry's values for t: FP32 data as it is (the served
// tensor is not modified after the response), other numbers widened.
func logValues(f64 *[]float64, f32 *[]float32, t tensor.Tensor) bool {
	if d, ok := t.Data.([]float32); ok && t.DataType == tensor.FP32 {
		*f32 = d
		return true
	}
	d, ok := t.Float64s()
	*f64 = d
	return ok
}

// Register mounts POST /v1/feedback, GET /v1/feedback/export and
// GET /v1/predictions/{id} on the server's app (nothing when the prediction
// log is off).
func (m *Monitor) Register(r fiber.Router) {
	if m.api != nil {
		m.api.Register(r)
	}
}

// Run runs the drift monitor and, when configured, the prediction log
// until ctx is done; the prediction log then writes what is still queued.
// It returns nil once both have stopped (a prediction log that stops on an
// error is logged; serving goes on). Cancel ctx after the HTTP server has
// drained, then Close.
func (m *Monitor) Run(ctx context.Context) error {
	driftDone := make(chan struct{})
	go func() { _ = m.drift.Run(ctx); close(driftDone) }()
	if m.log != nil {
		if err := m.log.Run(ctx); err != nil {
			m.logger.Error("prediction log stopped", "component", "predlog", "err", err)
		}
	}
	<-driftDone
	return nil
}

// Close closes the prediction database; call it after Run has returned.
func (m *Monitor) Close() error {
	if m.db != nil {
		err := m.db.Close()
		m.db = nil
		return err
	}
	return nil
}
