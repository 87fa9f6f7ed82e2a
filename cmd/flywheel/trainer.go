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
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/flywheel-ml/flywheel/internal/database"
	"github.com/flywheel-ml/flywheel/server/feedback"
	"github.com/flywheel-ml/flywheel/server/modelsource"
	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/server/predlog"
	"github.com/flywheel-ml/flywheel/train/external"
	"github.com/flywheel-ml/flywheel/train/jobs"
	"github.com/flywheel-ml/flywheel/train/pipeline"
	"github.com/flywheel-ml/flywheel/train/service"
	"github.com/flywheel-ml/flywheel/train/serving"
	"github.com/flywheel-ml/flywheel/train/watch"
)

// trainerFlags is the command line of `flywheel trainer`.
type trainerFlags struct {
	listen, token, tokenFile         string
	db, models, model, work, data    string
	database, databaseFile, name     string
	lease                            time.Duration
	target                           string
	serveURL, adminToken, adminFile  string
	cooldown, externalTimeout, ready time.Duration
	shutdown                         time.Duration
	maxAttempts, windowDays, holdout int
	minHoldout                       int
	margin, threshold, thMargin      float64
	metric, baseUntil, externalCmd   string
	experiment, ortLib               string
	logLevel, logFormat              string
	algorithm, features              string
	sets                             stringList
	testFraction                     float64
	referenceDays                    int
	track                            bool
	tf                               trackingFlags
	syncInterval                     time.Duration
	watchWindow, watchInterval       time.Duration
	watchMinRows                     int
}

func trainerFlagSet(f *trainerFlags) *flagSet {
	fs := newFlagSet("trainer", "Run the retraining service: Alertmanager webhook, manual retraining, a durable SQLite job queue\nand the pipeline snapshot → train → evaluate → gate → track → publish → confirm.")
	d := pipeline.DefaultConfig()
	fs.String(&f.listen, "listen", "", ":8090", "address to listen on"+listenHelp)
	fs.String(&f.token, "token", "", "", "bearer token required on POST /v1/alerts and /v1/retrain")
	fs.String(&f.tokenFile, "token-file", "", "", "file holding the bearer token (instead of --token)")
	fs.String(&f.db, "db", "", "data/trainer/jobs.db", "SQLite job store (one trainer)")
	fs.String(&f.database, "database", database.EnvURL, "", "shared database, postgres://user:password@host:5432/db: the job queue lives there (several trainers claim jobs from it) and snapshots read feedback labels from it directly instead of serve's export; replaces --db")
	fs.String(&f.databaseFile, "database-file", database.EnvURL+"_FILE", "", "file holding the --database URL (a mounted secret), instead of --database")
	fs.String(&f.name, "name", "", "", "this trainer's name in job claims and logs (default: host-pid-random; on Kubernetes, the pod name)")
	fs.Duration(&f.lease, "lease", "", jobs.DefaultLease, "with --database: how long a claimed job stays this trainer's without renewal (renewed every third); a trainer that dies loses its job after this and another one retries it")
	fs.String(&f.models, "models", "", "models", "model repository folder that serve watches; or models:/<name>@<alias> (registry mode, no shared folder: the champion is the version the alias names at --tracking-uri, and a promoted version is registered with its job id as a tag and gets the alias, as serve --models models:/… follows)")
	fs.String(&f.model, "model", "", d.Model, "model of alerts that carry no model label")
	fs.String(&f.work, "work-dir", "", "data/trainer/work", "per-job snapshots, candidates and logs")
	fs.String(&f.data, "data", "", "data/chicago/chicago.csv", "base dataset CSV (date, features, target)")
	fs.String(&f.target, "target", "", "ridership", "target column of the base dataset")
	fs.String(&f.features, "features", "", featuresRidership, "features of the base dataset: ridership (the numeric columns, dow, holiday: train/features) or columns (every numeric column, in file order)")
	fs.String(&f.serveURL, "serve-url", "", "http://127.0.0.1:8080", "serve's base URL (feedback export, version readiness)")
	fs.String(&f.adminToken, "admin-token", "", "", "serve's admin token for the feedback export")
	fs.String(&f.adminFile, "admin-token-file", "", "", "file holding serve's admin token (instead of --admin-token)")
	fs.Duration(&f.cooldown, "cooldown", "", jobs.DefaultCooldown, "an alert group seen again within this long maps to the same job")
	fs.Int(&f.maxAttempts, "max-attempts", "", jobs.DefaultMaxAttempts, "attempts per job, counting the first (a job interrupted by a crash is retried until this)")
	fs.Int(&f.windowDays, "window-days", "", d.WindowDays, "training window in days before the holdout (0 = all rows)")
	fs.Int(&f.holdout, "holdout-days", "", d.HoldoutDays, "freshest labelled days held out to compare candidate and champion")
	fs.Int(&f.minHoldout, "min-holdout", "", d.MinHoldout, "fewest holdout rows to evaluate on")
	fs.Float(&f.margin, "margin", "", d.Margin, "besides the gate's paired bootstrap interval (promote when the interval of candidate − champion error lies below zero), the fraction by which the candidate's mean must beat the champion's (0 = the interval decides)")
	fs.Float(&f.threshold, "threshold", "", 0, "absolute ceiling of the gate metric (0 = the champion card's threshold)")
	fs.Float(&f.thMargin, "threshold-margin", "", d.ThresholdMargin, "> 0: a promoted version's card thresholds (ModelErrorHigh, the next gate's ceiling) = this × its holdout MAE/RMSE; 0: the champion's carry over")
	fs.String(&f.metric, "metric", "", d.Metric, "gate metric, lower is better: mae or rmse")
	fs.String(&f.baseUntil, "base-until", "", "", "last base-dataset date used (YYYY-MM-DD); default: the champion's training end")
	fs.String(&f.algorithm, "algorithm", "", "", "algorithm of candidates: ridge, mlp or gbdt (default: the champion card's)")
	fs.fs.Var(&f.sets, "set", "one hyper-parameter of candidates, key=value (repeatable), over the champion card's, e.g. epochs=100")
	fs.add("set", "")
	fs.Float(&f.testFraction, "test-fraction", "", 0.1, "built-in trainer: the fraction of the training rows (every k-th, interleaved) that scores the card's test metrics")
	fs.Int(&f.referenceDays, "reference-days", "", 365, "built-in trainer: the candidate's drift reference comes from its training rows of the last N days (0 = all rows), so a retrained version is not flagged as drifted against years it has outgrown")
	fs.String(&f.externalCmd, "external-cmd", "", "", "external trainer command (split on spaces); the dataset path and output dir are appended (empty: the built-in trainer)")
	fs.Duration(&f.externalTimeout, "external-timeout", "", external.DefaultTimeout, "time limit of one external training run")
	fs.Duration(&f.ready, "ready-wait", "", d.ReadyWait, "how long to wait for serve to report a published version ready")
	fs.Duration(&f.shutdown, "shutdown-timeout", "", 10*time.Second, "time allowed for in-flight HTTP requests on shutdown")
	fs.String(&f.experiment, "experiment", "", d.Experiment, "tracker experiment of retraining runs")
	fs.Bool(&f.track, "track", "", true, "record every job that passes the gate as a tracker run, register its version and move alias champion (false: the track step is skipped)")
	f.tf.register(fs)
	fs.Duration(&f.syncInterval, "tracking-sync-interval", "", time.Minute, "with --tracking-uri: how often runs recorded in the SQLite fallback are replayed to MLflow")
	wd := watch.DefaultConfig()
	fs.Duration(&f.watchWindow, "watch-window", "", wd.Window, "after a promotion, how long the new version is watched: the version it replaced is scored in shadow on the same logged requests and, when labels show the new one significantly worse, restored (with models:/…@<alias>: the alias moves back to it; 0: no watch)")
	fs.Int(&f.watchMinRows, "watch-min-rows", "", wd.MinRows, "labelled requests of the new version before the watch judges it")
	fs.Duration(&f.watchInterval, "watch-interval", "", wd.Interval, "time between watch checks")
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
	// tracking is the opened tracker (nil with --track=false); its syncer
	// replays runs from the SQLite fallback to MLflow while the app runs.
	tracking     *tracking
	syncInterval time.Duration
	closers      []func() error // the shared feedback store
	watcher      *watch.Watcher // nil with --watch-window 0
}

// close releases what newTrainerApp opened, for callers that do not run it.
func (a *trainerApp) close() {
	a.store.Close()
	for _, c := range a.closers {
		c()
	}
	if a.tracking != nil {
		a.tracking.Close()
	}
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
	if f.database, err = secret("database", f.database, f.databaseFile); err != nil {
		return nil, err
	}
	adminToken, err := secret("admin-token", f.adminToken, f.adminFile)
	if err != nil {
		return nil, err
	}
	if err := checkFeatureSet(f.features); err != nil {
		return nil, err
	}
	ref, err := trainerRegistryRef(&f)
	if err != nil {
		return nil, err
	}
	cfg := pipeline.DefaultConfig()
	cfg.Model, cfg.ModelsDir, cfg.WorkDir, cfg.Experiment = f.model, f.models, f.work, f.experiment
	if ref != nil {
		cfg.ModelsDir, cfg.Alias = "", ref.Alias
	}
	cfg.WindowDays, cfg.HoldoutDays, cfg.MinHoldout = f.windowDays, f.holdout, f.minHoldout
	cfg.Margin, cfg.Metric, cfg.BaseUntil, cfg.ReadyWait = f.margin, f.metric, f.baseUntil, f.ready
	cfg.Threshold, cfg.ThresholdMargin = f.threshold, f.thMargin
	if cfg.Algorithm, cfg.Params, err = loopParams(f); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, usageError{err}
	}
	trainer, err := loopTrainer(f)
	if err != nil {
		return nil, err
	}
	lib, ortVersion, err := ort.Setup(f.ortLib)
	if err != nil {
		return nil, err
	}
	if f.syncInterval <= 0 {
		return nil, usageError{fmt.Errorf("--tracking-sync-interval %s must be positive", f.syncInterval)}
	}
	tr, err := loopTracker(ctx, f, logger.With("component", "tracker"))
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*trainerApp, error) {
		if tr != nil {
			tr.Close()
		}
		return nil, err
	}
	serveClient := &serving.Client{BaseURL: f.serveURL, Token: adminToken}
	var closers []func() error
	queue := f.db
	if f.database != "" {
		queue = f.database
	} else if err := os.MkdirAll(filepath.Dir(f.db), 0o755); err != nil {
		return fail(fmt.Errorf("--db directory: %w", err))
	}
	store, err := jobs.Open(ctx, jobs.Options{Path: queue, Exclusive: true, Cooldown: f.cooldown, MaxAttempts: f.maxAttempts, Lease: f.lease, Owner: f.name,
		Logger: logger.With("component", "jobs")})
	if err != nil {
		return fail(err)
	}
	var source pipeline.FeedbackSource = serveClient
	if f.database != "" {
		fb, err := openFeedbackStore(ctx, f.database)
		if err != nil {
			store.Close()
			return fail(err)
		}
		source = fb
		closeFeedback := fail
		fail = func(err error) (*trainerApp, error) { fb.Close(); return closeFeedback(err) }
		closers = append(closers, fb.Close)
	}
	recovered, err := store.Recover(ctx)
	if err != nil {
		store.Close()
		return fail(err)
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
	popts := pipeline.Options{
		Config:    cfg,
		Base:      loopBase(f),
		Feedback:  source,
		Trainer:   trainer,
		Predictor: pipeline.ONNXPredictor{},
		Serving:   serveClient,
		Logger:    logger.With("component", "pipeline"),
	}
	if tr != nil { // not a nil *tracking in the interface
		popts.Tracker, popts.TrackerKind = tr, tr.kind
	}
	checkModel := repositoryModel(f.models)
	if ref != nil {
		// The registry is the model store: versions and the alias go to
		// MLflow directly (a version only in a local store cannot be
		// served). Runs go through the local store when every trainer
		// shares it (PostgreSQL): an attempt taken over by another trainer
		// finds the run there, and the syncers replay a run MLflow missed
		// once. With a per-process SQLite store, runs go to MLflow directly.
		popts.Registry = tr.remote
		if tr.local.Dialect() != database.Postgres {
			popts.Tracker = tr.remote
		}
		checkModel = registryModel(*ref)
	}
	p, err := pipeline.New(popts)
	if err != nil {
		store.Close()
		return fail(err)
	}
	worker, err := jobs.NewWorker(jobs.WorkerOptions{Store: store, Runner: p, Metrics: metrics, Logger: logger.With("component", "worker")})
	if err != nil {
		store.Close()
		return fail(err)
	}
	var watcher *watch.Watcher
	if f.watchWindow > 0 {
		wc := watch.DefaultConfig()
		wc.Model, wc.ModelsDir, wc.Window, wc.MinRows, wc.Interval = f.model, f.models, f.watchWindow, f.watchMinRows, f.watchInterval
		wo := watch.Options{Config: wc, Feedback: source, Predictor: pipeline.ONNXPredictor{}, Experiment: cfg.Experiment,
			Registerer: reg, Logger: logger.With("component", "watch")}
		if tr != nil { // not a nil *tracking in the interface
			wo.Recorder = tr
		}
		if ref != nil {
			// Registry mode: the alias's version is watched against the
			// one it replaced (both downloaded into the work dir); a
			// rollback moves the alias back.
			wo.ModelsDir, wo.Alias, wo.Registry, wo.Recorder = filepath.Join(f.work, "watch"), ref.Alias, tr.remote, popts.Tracker
		}
		if watcher, err = watch.New(wo); err != nil {
			store.Close()
			return fail(usageError{err})
		}
	}
	svc, err := service.New(service.Options{Store: store, Worker: worker, Token: token, DefaultModel: f.model, Gatherer: reg,
		CheckModel: checkModel,
		Logger:     logger.With("component", "api")})
	if err != nil {
		store.Close()
		return fail(err)
	}
	trainerKind := "built-in"
	if f.externalCmd != "" {
		trainerKind = "external"
	}
	trackerKind := "none"
	if tr != nil {
		trackerKind = tr.kind
	}
	logger.Info("trainer ready", "onnxruntime", ortVersion, "library", lib, "db", database.Redact(queue), "owner", store.Owner(), "models", f.models, "serve", f.serveURL,
		"trainer", trainerKind, "tracker", trackerKind, "tracking_db", f.tf.db)
	return &trainerApp{store: store, worker: worker, service: svc, registry: reg, logger: logger, shutdown: f.shutdown,
		tracking: tr, syncInterval: f.syncInterval, closers: closers, watcher: watcher}, nil
}

// run serves on ln and runs the worker and the tracking syncer as one run
// group until ctx is done or one of them fails; then the one shutdown path
// drains in order: readiness fails, HTTP stops, the running step is
// persisted as interrupted, the syncer stops, the store closes.
func (a *trainerApp) run(ctx context.Context, ln net.Listener) error {
	defer a.close()
	g, gctx := errgroup.WithContext(ctx)
	// The worker and the syncer stop only after HTTP has drained, so they
	// run under their own context, cancelled by the shutdown path.
	wctx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorker()
	g.Go(func() error {
		if err := a.service.App().Listener(ln); err != nil {
			return fmt.Errorf("HTTP server: %w", err)
		}
		return nil
	})
	g.Go(func() error { _ = a.worker.Run(wctx); return nil })
	if a.watcher != nil {
		g.Go(func() error { a.watcher.Run(wctx); return nil })
	}
	if a.tracking != nil {
		g.Go(func() error {
			if err := a.tracking.runSyncer(wctx, a.syncInterval); err != nil && !errors.Is(err, context.Canceled) {
				a.logger.Warn("tracking syncer stopped", "component", "tracker", "err", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		if ctx.Err() != nil {
			a.logger.Info("shutting down")
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
		return nil
	})
	a.worker.Wake()
	return g.Wait()
}

func runTrainer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runTrainerOn(ctx, args, nil, stdout, stderr)
}

// runTrainerOn is runTrainer serving on ln, or on --listen when ln is nil
// (tests pass a listener they hold, so no port is found free and reused).
func runTrainerOn(ctx context.Context, args []string, ln net.Listener, stdout, stderr io.Writer) error {
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
	if ln == nil {
		if ln, err = openListener("--listen", f.listen); err != nil {
			app.close()
			return err
		}
	}
	app.logger.Info("listening", "address", ln.Addr().String(), "routes", strings.Join(app.service.Routes(), ", "))
	return app.run(ctx, ln)
}

// storeFeedback reads feedback labels from the shared database directly:
// every replica's labels, with no per-replica export.
type storeFeedback struct {
	db    *predlog.Store
	store *feedback.Store
}

func openFeedbackStore(ctx context.Context, url string) (*storeFeedback, error) {
	db, err := predlog.Open(ctx, url, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("--database: %w", err)
	}
	st, err := feedback.New(feedback.Options{DB: db})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &storeFeedback{db: db, store: st}, nil
}

// Export implements pipeline.FeedbackSource with the export's own encoding.
func (s *storeFeedback) Export(ctx context.Context, model string, since time.Time) ([]pipeline.Feedback, error) {
	rows, err := s.store.Rows(ctx, model, since)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := rows.Encode(pw)
		pw.CloseWithError(err)
	}()
	out, err := serving.DecodeFeedback(pr)
	pr.Close() // an encoder still writing fails and stops
	<-done
	return out, err
}

func (s *storeFeedback) Close() error { return s.db.Close() }

// trainerRegistryRef returns the models:/<name>@<alias> reference of
// --models (registry mode) or nil for a folder. The reference names the
// trainer's model (--model) and needs MLflow and tracking.
func trainerRegistryRef(f *trainerFlags) (*modelsource.Ref, error) {
	if !modelsource.IsRef(f.models) {
		return nil, nil
	}
	ref, err := modelsource.ParseRef(f.models)
	if err != nil {
		return nil, usageError{fmt.Errorf("--models %w", err)}
	}
	switch {
	case ref.Alias == "":
		return nil, usageError{fmt.Errorf("--models %s: the trainer moves an alias: use models:/%s@<alias> (e.g. @champion)", f.models, ref.Name)}
	case f.tf.uri == "":
		return nil, usageError{errors.New("--models models:/…: set --tracking-uri or MLFLOW_TRACKING_URI to the MLflow server")}
	case !f.track:
		return nil, usageError{errors.New("--models models:/… publishes by registering a tracked run: --track=false cannot be used with it")}
	}
	f.model = ref.Name
	return &ref, nil
}

// registryModel is the trainer's check of model names in registry mode:
// the one model of its models:/ reference.
func registryModel(ref modelsource.Ref) func(string) error {
	return func(model string) error {
		if model != ref.Name {
			return fmt.Errorf("not the model this trainer publishes (%s)", ref)
		}
		return nil
	}
}

// modelName is a model folder's name: no separators, no "..".
var modelName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// repositoryModel returns the trainer's check of model names from alerts
// and retrain requests: a plain name whose folder is a directory (not a
// symlink) in the model repository.
func repositoryModel(root string) func(string) error {
	return func(model string) error {
		if !modelName.MatchString(model) || strings.Contains(model, "..") {
			return errors.New("not a model name (letters, digits, '_', '.', '-')")
		}
		st, err := os.Lstat(filepath.Join(root, model))
		if err != nil || !st.IsDir() {
			return fmt.Errorf("no such model in the repository %s", root)
		}
		return nil
	}
}
