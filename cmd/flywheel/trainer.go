package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/train/external"
	"github.com/flywheel-ml/flywheel/train/jobs"
	"github.com/flywheel-ml/flywheel/train/pipeline"
	"github.com/flywheel-ml/flywheel/train/service"
	"github.com/flywheel-ml/flywheel/train/serving"
)

// trainerFlags is the command line of `flywheel trainer`.
type trainerFlags struct {
	listen, token, tokenFile         string
	db, models, model, work, data    string
	target                           string
	serveURL, adminToken, adminFile  string
	cooldown, externalTimeout, ready time.Duration
	shutdown                         time.Duration
	maxAttempts, windowDays, holdout int
	minHoldout                       int
	margin, threshold                float64
	metric, baseUntil, externalCmd   string
	experiment, ortLib               string
	logLevel, logFormat              string
}

func trainerFlagSet(f *trainerFlags) *flagSet {
	fs := newFlagSet("trainer", "Run the retraining service: Alertmanager webhook, manual retraining, a durable SQLite job queue\nand the pipeline snapshot → train → evaluate → gate → track → publish → confirm.")
	d := pipeline.DefaultConfig()
	fs.String(&f.listen, "listen", "", ":8090", "address to listen on")
	fs.String(&f.token, "token", "", "", "bearer token required on POST /v1/alerts and /v1/retrain")
	fs.String(&f.tokenFile, "token-file", "", "", "file holding the bearer token (instead of --token)")
	fs.String(&f.db, "db", "", "data/trainer/jobs.db", "SQLite job store")
	fs.String(&f.models, "models", "", "models", "model repository that serve watches")
	fs.String(&f.model, "model", "", d.Model, "model of alerts that carry no model label")
	fs.String(&f.work, "work-dir", "", "data/trainer/work", "per-job snapshots, candidates and logs")
	fs.String(&f.data, "data", "", "data/chicago/chicago.csv", "base dataset CSV (date, features, target)")
	fs.String(&f.target, "target", "", "ridership", "target column of the base dataset")
	fs.String(&f.serveURL, "serve-url", "", "http://127.0.0.1:8080", "serve's base URL (feedback export, version readiness)")
	fs.String(&f.adminToken, "admin-token", "", "", "serve's admin token for the feedback export")
	fs.String(&f.adminFile, "admin-token-file", "", "", "file holding serve's admin token (instead of --admin-token)")
	fs.Duration(&f.cooldown, "cooldown", "", jobs.DefaultCooldown, "an alert group seen again within this long maps to the same job")
	fs.Int(&f.maxAttempts, "max-attempts", "", jobs.DefaultMaxAttempts, "attempts per job, counting the first (a job interrupted by a crash is retried until this)")
	fs.Int(&f.windowDays, "window-days", "", d.WindowDays, "training window in days before the holdout (0 = all rows)")
	fs.Int(&f.holdout, "holdout-days", "", d.HoldoutDays, "freshest labelled days held out to compare candidate and champion")
	fs.Int(&f.minHoldout, "min-holdout", "", d.MinHoldout, "fewest holdout rows to evaluate on")
	fs.Float(&f.margin, "margin", "", d.Margin, "fraction by which the candidate must beat the champion (0.02 = 2 %)")
	fs.Float(&f.threshold, "threshold", "", 0, "absolute ceiling of the gate metric (0 = the champion card's threshold)")
	fs.String(&f.metric, "metric", "", d.Metric, "gate metric, lower is better: mae or rmse")
	fs.String(&f.baseUntil, "base-until", "", "", "last base-dataset date used (YYYY-MM-DD); default: the champion's training end")
	fs.String(&f.externalCmd, "external-cmd", "", "", "external trainer command (split on spaces); the dataset path and output dir are appended")
	fs.Duration(&f.externalTimeout, "external-timeout", "", external.DefaultTimeout, "time limit of one external training run")
	fs.Duration(&f.ready, "ready-wait", "", d.ReadyWait, "how long to wait for serve to report a published version ready")
	fs.Duration(&f.shutdown, "shutdown-timeout", "", 10*time.Second, "time allowed for in-flight HTTP requests on shutdown")
	fs.String(&f.experiment, "experiment", "", d.Experiment, "tracker experiment of retraining runs")
	fs.String(&f.ortLib, "ort-lib", "FLYWHEEL_ORT_LIB", "", "ONNX Runtime shared library (default: ./lib/libonnxruntime.so.1)")
	fs.String(&f.logLevel, "log-level", "", "info", "log level: debug, info, warn, error")
	fs.String(&f.logFormat, "log-format", "", "logfmt", "log format: logfmt or json")
	return fs
}

// secret returns the flag value or the trimmed content of the file flag.
func secret(name, value, file string) (string, error) {
	if value != "" && file != "" {
		return "", usageError{fmt.Errorf("at most one of --%s and --%s-file may be set", name, name)}
	}
	if file == "" {
		return value, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--%s-file: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func loopLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: %w", level, err)}
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "logfmt", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q is not logfmt or json", format)}
}

// trainerApp is the wired trainer: store, worker, pipeline and HTTP API.
type trainerApp struct {
	store    *jobs.Store
	worker   *jobs.Worker
	service  *service.Service
	registry *prometheus.Registry
	logger   *slog.Logger
	shutdown time.Duration
}

// newTrainerApp opens the job store (recovering interrupted jobs) and wires
// every part. Close the store with app.store.Close when not calling run.
func newTrainerApp(ctx context.Context, f trainerFlags, logw io.Writer) (*trainerApp, error) {
	logger, err := loopLogger(logw, f.logFormat, f.logLevel)
	if err != nil {
		return nil, err
	}
	token, err := secret("token", f.token, f.tokenFile)
	if err != nil {
		return nil, err
	}
	if token == "" {
		return nil, usageError{errors.New("a bearer token is required: set --token, --token-file or FLYWHEEL_TOKEN")}
	}
	adminToken, err := secret("admin-token", f.adminToken, f.adminFile)
	if err != nil {
		return nil, err
	}
	cfg := pipeline.DefaultConfig()
	cfg.Model, cfg.ModelsDir, cfg.WorkDir, cfg.Experiment = f.model, f.models, f.work, f.experiment
	cfg.WindowDays, cfg.HoldoutDays, cfg.MinHoldout = f.windowDays, f.holdout, f.minHoldout
	cfg.Margin, cfg.Metric, cfg.BaseUntil, cfg.ReadyWait = f.margin, f.metric, f.baseUntil, f.ready
	cfg.Threshold = f.threshold
	if err := cfg.Validate(); err != nil {
		return nil, usageError{err}
	}
	trainer, err := loopTrainer(f)
	if err != nil {
		return nil, err
	}
	tracker, err := loopTracker(ctx, f)
	if err != nil {
		return nil, err
	}
	lib, ortVersion, err := ort.Setup(f.ortLib)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(f.db), 0o755); err != nil {
		return nil, fmt.Errorf("--db directory: %w", err)
	}
	store, err := jobs.Open(ctx, jobs.Options{Path: f.db, Cooldown: f.cooldown, MaxAttempts: f.maxAttempts, Logger: logger.With("component", "jobs")})
	if err != nil {
		return nil, err
	}
	recovered, err := store.Recover(ctx)
	if err != nil {
		store.Close()
		return nil, err
	}
	for _, j := range recovered {
		logger.Warn("recovered an interrupted job", "job_id", j.ID, "state", j.State, "attempt", j.Attempt, "reason", j.Reason)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := jobs.NewMetrics(reg, func() float64 {
		n, _ := store.CountState(context.Background(), jobs.StateQueued)
		return float64(n)
	})
	metrics.InitSteps(pipeline.Steps...)
	serveClient := &serving.Client{BaseURL: f.serveURL, Token: adminToken}
	p, err := pipeline.New(pipeline.Options{
		Config:    cfg,
		Base:      loopBase(f),
		Feedback:  serveClient,
		Trainer:   trainer,
		Predictor: pipeline.ONNXPredictor{},
		Tracker:   tracker,
		Serving:   serveClient,
		Logger:    logger.With("component", "pipeline"),
	})
	if err != nil {
		store.Close()
		return nil, err
	}
	worker, err := jobs.NewWorker(jobs.WorkerOptions{Store: store, Runner: p, Metrics: metrics, Logger: logger.With("component", "worker")})
	if err != nil {
		store.Close()
		return nil, err
	}
	svc, err := service.New(service.Options{Store: store, Worker: worker, Token: token, DefaultModel: f.model, Gatherer: reg,
		Logger: logger.With("component", "api")})
	if err != nil {
		store.Close()
		return nil, err
	}
	logger.Info("trainer ready", "onnxruntime", ortVersion, "library", lib, "db", f.db, "models", f.models, "serve", f.serveURL)
	return &trainerApp{store: store, worker: worker, service: svc, registry: reg, logger: logger, shutdown: f.shutdown}, nil
}

// run serves on ln and runs the worker until ctx is done, then drains:
// readiness fails, HTTP stops, the running step is persisted as
// interrupted, the store closes.
func (a *trainerApp) run(ctx context.Context, ln net.Listener) error {
	defer a.store.Close()
	httpErr := make(chan error, 1)
	go func() { httpErr <- a.service.App().Listener(ln) }()
	wctx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	workerDone := make(chan struct{})
	go func() { _ = a.worker.Run(wctx); close(workerDone) }()
	a.worker.Wake()

	var err error
	select {
	case <-ctx.Done():
		a.logger.Info("shutting down")
	case err = <-httpErr:
		err = fmt.Errorf("HTTP server: %w", err)
	}
	a.service.Drain()
	sctx, cancel := context.WithTimeout(context.Background(), a.shutdown)
	defer cancel()
	if serr := a.service.App().ShutdownWithContext(sctx); serr != nil {
		a.logger.Warn("HTTP shutdown", "err", serr)
	}
	if job := a.worker.Current(); job != "" {
		a.logger.Warn("interrupting the running job; it is retried on the next start", "job_id", job)
	}
	stopWorker()
	<-workerDone
	return err
}

func runTrainer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f trainerFlags
	fs := trainerFlagSet(&f)
	if err := fs.Parse(args, stdout); err != nil {
		return err
	}
	if len(fs.Args()) > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	app, err := newTrainerApp(ctx, f, stderr)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		app.store.Close()
		return fmt.Errorf("--listen %s: %w", f.listen, err)
	}
	app.logger.Info("listening", "address", ln.Addr().String(), "routes", strings.Join(app.service.Routes(), ", "))
	return app.run(ctx, ln)
}
