package main

// In-service monitoring of `flywheel serve`: the prediction log, feedback
// labels and drift, wired to the server through an api.Observer (every
// served prediction) and the repository's OnChange hook (versions entering
// and leaving service).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/drift"
	"github.com/flywheel-ml/flywheel/server/feedback"
	"github.com/flywheel-ml/flywheel/server/predlog"
	"github.com/flywheel-ml/flywheel/server/repository"
	"github.com/flywheel-ml/flywheel/train/card"
)

// monitorFlags configure the prediction log, feedback and drift.
type monitorFlags struct {
	predlogDB       string
	predlog         predlog.Config
	busyTimeout     time.Duration
	drift           drift.Config
	feedbackMaxItem int
}

// addMonitorFlags defines the monitoring flags of `flywheel serve`.
func addMonitorFlags(fs *flagSet, f *monitorFlags) {
	f.predlog, f.drift = predlog.DefaultConfig(), drift.DefaultConfig()
	fs.String(&f.predlogDB, "predlog-db", "", filepath.Join("var", "flywheel.db"), "SQLite database of the prediction log and feedback labels (created with its folder; \"\" turns the prediction log, feedback and prediction lookup off)")
	fs.Float(&f.predlog.SampleRate, "predlog-sample-rate", "", f.predlog.SampleRate, "share of predictions logged, in (0, 1]")
	fs.Int(&f.predlog.QueueSize, "predlog-queue", "", f.predlog.QueueSize, "predictions waiting to be written; when full, new ones are dropped and counted (flywheel_predlog_dropped_total), never waited for")
	fs.Int(&f.predlog.BatchSize, "predlog-batch", "", f.predlog.BatchSize, "most predictions written in one transaction")
	fs.Duration(&f.predlog.FlushInterval, "predlog-flush-interval", "", f.predlog.FlushInterval, "longest a prediction waits before it is written")
	fs.Duration(&f.predlog.MaxAge, "predlog-max-age", "", f.predlog.MaxAge, "delete logged predictions older than this (0: keep)")
	fs.Int64(&f.predlog.MaxRows, "predlog-max-rows", "", f.predlog.MaxRows, "keep at most this many logged predictions, the newest (0: no limit)")
	fs.Duration(&f.predlog.RetentionInterval, "predlog-retention-interval", "", f.predlog.RetentionInterval, "how often retention (max age, max rows) runs")
	fs.Duration(&f.busyTimeout, "predlog-busy-timeout", "", 5*time.Second, "SQLite busy timeout of the prediction database")
	fs.Int(&f.drift.Window, "drift-window", "", f.drift.Window, "rows per served version that feature and prediction drift (PSI) are computed over")
	fs.Int(&f.drift.MinRows, "drift-min-rows", "", f.drift.MinRows, "rows a window needs before drift is exported")
	fs.Int(&f.drift.QueueSize, "drift-queue", "", f.drift.QueueSize, "observations waiting for the drift monitor; when full, they are dropped and counted")
	fs.Int(&f.feedbackMaxItem, "feedback-max-items", "", 10000, "most labels in one POST /v1/feedback")
}

func (f *monitorFlags) validate() error {
	var errs []error
	if f.predlogDB != "" {
		if err := f.predlog.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("prediction log: %w", err))
		}
		if f.busyTimeout < 0 {
			errs = append(errs, fmt.Errorf("--predlog-busy-timeout must not be negative, got %s", f.busyTimeout))
		}
		if f.feedbackMaxItem < 1 {
			errs = append(errs, fmt.Errorf("--feedback-max-items must be positive, got %d", f.feedbackMaxItem))
		}
	}
	if err := f.drift.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("drift: %w", err))
	}
	return errors.Join(errs...)
}

// monitoring is the running monitoring of serve.
type monitoring struct {
	db     *predlog.Store // nil when the prediction log is off
	log    *predlog.Log
	drift  *drift.Monitor
	store  *feedback.Store
	api    *feedback.API
	logger *slog.Logger

	mu    sync.RWMutex
	cards map[versionKey]*card.Card // every version served since start (lineage of old predictions)

	stop context.CancelFunc
	done chan struct{}
	runs int
}

type versionKey struct {
	model   string
	version int
}

// newMonitoring opens the prediction database and builds the components;
// start runs their actors.
func newMonitoring(ctx context.Context, f monitorFlags, adminToken string, reg prometheus.Registerer, logger *slog.Logger) (*monitoring, error) {
	m := &monitoring{logger: logger, cards: map[versionKey]*card.Card{}}
	var err error
	m.drift, err = drift.New(drift.Options{Config: f.drift, Registerer: reg, Logger: logger.With("component", "drift")})
	if err != nil {
		return nil, usageError{err}
	}
	if f.predlogDB == "" {
		logger.Info("prediction log off (--predlog-db is empty): no feedback or prediction lookup", "component", "predlog")
		return m, nil
	}
	if err := os.MkdirAll(filepath.Dir(f.predlogDB), 0o755); err != nil {
		return nil, fmt.Errorf("--predlog-db %s: %w", f.predlogDB, err)
	}
	m.db, err = predlog.Open(ctx, f.predlogDB, f.busyTimeout)
	if err != nil {
		return nil, fmt.Errorf("--predlog-db %s: %w", f.predlogDB, err)
	}
	fail := func(err error) (*monitoring, error) {
		m.db.Close()
		return nil, err
	}
	m.log, err = predlog.New(predlog.Options{Config: f.predlog, Store: m.db, Registerer: reg, Logger: logger.With("component", "predlog")})
	if err != nil {
		return fail(usageError{err})
	}
	m.store, err = feedback.New(feedback.Options{DB: m.db, Log: m.log, Cards: m.card, Registerer: reg, Logger: logger.With("component", "feedback")})
	if err != nil {
		return fail(err)
	}
	m.api, err = feedback.NewAPI(feedback.APIOptions{Store: m.store, AdminToken: adminToken, MaxItems: f.feedbackMaxItem, Logger: logger.With("component", "feedback")})
	if err != nil {
		return fail(err)
	}
	logger.Info("prediction log open", "component", "predlog", "db", f.predlogDB, "sample_rate", f.predlog.SampleRate,
		"queue", f.predlog.QueueSize, "max_age", f.predlog.MaxAge, "max_rows", f.predlog.MaxRows)
	return m, nil
}

// card is the feedback store's card lookup.
func (m *monitoring) card(model string, version int) *card.Card {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.cards[versionKey{model, version}]
}

// OnChange is the repository hook: a version that starts serving gets a
// fresh drift window and its quality counters (at zero, with the card's
// thresholds); one that stops serving exports no drift any more.
func (m *monitoring) OnChange(c repository.Change) {
	v := int(c.Version)
	if !c.Ready {
		m.drift.Remove(c.Model, v)
		return
	}
	m.mu.Lock()
	m.cards[versionKey{c.Model, v}] = c.Card
	m.mu.Unlock()
	var names []string
	var ref *card.Reference
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
func (m *monitoring) Observe(ob api.Observation) {
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
	in, ok1 := ob.Inputs[0].Float64s()
	out, ok2 := ob.Outputs[0].Float64s()
	if !ok1 || !ok2 {
		return
	}
	var names []string
	if ob.Card != nil {
		names = ob.Card.FeatureNames()
	}
	m.log.RecordRows(predlog.Entry{ID: ob.RequestID, Time: ob.Time, Model: ob.Model, Version: version,
		Parameters: ob.Parameters, FeatureNames: names, Features: in, Outputs: out}, ob.Inputs[0].Rows())
}

// register mounts POST /v1/feedback, GET /v1/feedback/export and
// GET /v1/predictions/{id} (nothing when the prediction log is off).
func (m *monitoring) register(srv *api.Server) {
	if m.api != nil {
		m.api.Register(srv.App())
	}
}

// start runs the prediction log and drift actors until stop.
func (m *monitoring) start() {
	ctx, cancel := context.WithCancel(context.Background())
	m.stop, m.done = cancel, make(chan struct{}, 2)
	m.runs = 1
	go func() { _ = m.drift.Run(ctx); m.done <- struct{}{} }()
	if m.log != nil {
		m.runs++
		go func() {
			if err := m.log.Run(ctx); err != nil {
				m.logger.Error("prediction log stopped", "component", "predlog", "err", err)
			}
			m.done <- struct{}{}
		}()
	}
}

// close stops the actors — the prediction log writes what is still queued
// — and closes the database. Call it after the HTTP server has drained.
func (m *monitoring) close() error {
	if m.stop != nil {
		m.stop()
		for range m.runs {
			<-m.done
		}
		m.stop = nil
	}
	if m.db != nil {
		err := m.db.Close()
		m.db = nil
		return err
	}
	return nil
}
