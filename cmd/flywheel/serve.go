package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/metrics"
	"github.com/flywheel-ml/flywheel/server/modelsource"
	"github.com/flywheel-ml/flywheel/server/monitor"
	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/server/repository"
	"github.com/flywheel-ml/flywheel/tracker/mlflow"
)

// serveFlags is the configuration of `flywheel serve`.
type serveFlags struct {
	models          stringList
	registryCache   string
	registryPoll    time.Duration
	tracking        trackingFlags
	listen          string
	ortLib          string
	adminToken      string
	adminTokenFile  string
	insecureAdmin   bool
	feedbackToken   string
	feedbackFile    string
	bodyLimit       int
	readTimeout     time.Duration
	writeTimeout    time.Duration
	idleTimeout     time.Duration
	inferTimeout    time.Duration
	shutdownTimeout time.Duration
	shutdownDelay   time.Duration
	rescanInterval  time.Duration
	intraOpThreads  int
	maxOutput       int64
	ortMaxMemory    int64
	interOpThreads  int
	graphOpt        string
	mlflowModel     string
	logFormat       string
	logLevel        string
	pprofListen     string
	monitor         monitor.Config
	database        string
	databaseFile    string
}

// newLogger builds the process logger from --log-format and --log-level.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: want text or json", format)}
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runServeOn(ctx, args, nil, stdout, stderr)
}

// runServeOn is runServe serving on ln, or on --listen when ln is nil
// (tests pass a listener they hold, so no port is found free and reused).
func runServeOn(ctx context.Context, args []string, ln net.Listener, stdout, stderr io.Writer) error {
	var f serveFlags
	fs := newFlagSet("serve", "Serve every ONNX model in a model repository over the Open Inference Protocol (KServe V2) and MLflow scoring REST APIs, hot-reloading new versions.")
	fs.fs.Var(&f.models, "models", "model repository folder <dir>/<model>/<version>/model.onnx (+ model.json, <dir>/<model>/config.yaml), default ./models; or a registered model models:/<name>@<alias> (or models:/<name>/<version>) served from the MLflow registry at --tracking-uri, following the alias (repeat for several models)")
	fs.add("models", "")
	fs.String(&f.registryCache, "registry-cache", "", "var/registry-models", "with models:/ references: the local folder the registry's versions are downloaded into (kept across restarts)")
	fs.Duration(&f.registryPoll, "registry-poll", "", 10*time.Second, "with models:/ references: how often the aliases are polled")
	f.tracking.registerServer(fs, "MLflow tracking server URL the models:/ references are resolved at (e.g. http://127.0.0.1:5000)")
	fs.String(&f.listen, "listen", "", ":8080", "HTTP listen address"+listenHelp)
	fs.String(&f.ortLib, "ort-lib", ort.EnvVar, "", "path to libonnxruntime.so.1 (default: lib/ in the working directory or the project root)")
	fs.String(&f.adminToken, "admin-token", "", "", "bearer token required by repository load/unload and the feedback export (empty: they are disabled unless --insecure-admin)")
	fs.String(&f.adminTokenFile, "admin-token-file", "", "", "file holding the admin token (instead of --admin-token)")
	fs.String(&f.feedbackToken, "feedback-token", "", "", "bearer token required by POST /v1/feedback and accepted by GET /v1/predictions/{id} (empty: labels are open)")
	fs.String(&f.feedbackFile, "feedback-token-file", "", "", "file holding the feedback token (instead of --feedback-token)")
	fs.Bool(&f.insecureAdmin, "insecure-admin", "", false, "without --admin-token, let anyone load/unload models (trusted networks only)")
	fs.Int(&f.bodyLimit, "body-limit", "", 8<<20, "largest request body in bytes (larger: 413)")
	fs.Duration(&f.readTimeout, "read-timeout", "", 30*time.Second, "time to read a whole request")
	fs.Duration(&f.writeTimeout, "write-timeout", "", 30*time.Second, "time to write a response")
	fs.Duration(&f.idleTimeout, "idle-timeout", "", 120*time.Second, "keep-alive idle time")
	fs.Duration(&f.inferTimeout, "infer-timeout", "", 30*time.Second, "longest model run per request")
	fs.Duration(&f.shutdownTimeout, "shutdown-timeout", "", 15*time.Second, "time to drain in-flight requests on SIGTERM/SIGINT")
	fs.Duration(&f.shutdownDelay, "shutdown-delay", "", 2*time.Second, "on SIGTERM/SIGINT: readiness fails at once, requests are still served for this long with Connection: close (keep-alive clients leave), then the listener closes (Kubernetes: after a preStop sleep for endpoint propagation)")
	fs.Duration(&f.rescanInterval, "rescan-interval", "", 5*time.Second, "periodic repository rescan, the fallback for missed file events (0: off)")
	fs.Int(&f.intraOpThreads, "intra-op-threads", "", 1, "ONNX Runtime intra-op threads per session (config.yaml may override)")
	fs.Int64(&f.ortMaxMemory, "ort-max-memory", "", ort.DefaultMaxMemory, "most bytes ONNX Runtime may allocate for all models together (one shared CPU arena; memory a run used stays reserved for later runs); a run that needs more fails inside ONNX Runtime and answers 422 (503 while other runs hold the memory) (0: no cap)")
	fs.Int64(&f.maxOutput, "max-output-elements", "", ort.DefaultMaxOutputElements, "most elements of one model output per request; larger outputs answer 422 before they are encoded or logged (config.yaml session.max_output_elements overrides; 0: no cap)")
	fs.Int(&f.interOpThreads, "inter-op-threads", "", 1, "ONNX Runtime inter-op threads per session (config.yaml may override)")
	fs.String(&f.graphOpt, "graph-optimization", "", "all", "ONNX Runtime graph optimisation: disabled, basic, extended or all")
	fs.String(&f.mlflowModel, "mlflow-model", "", "", "model served by POST /invocations without ?model= when several are loaded")
	fs.String(&f.logFormat, "log-format", "", "text", "log format: text or json")
	fs.String(&f.logLevel, "log-level", "", "info", "log level: debug, info, warn or error")
	fs.String(&f.pprofListen, "pprof-listen", "", "", "address for Go's /debug/pprof profiling endpoints, e.g. 127.0.0.1:6060 (empty: off)")
	addMonitorFlags(fs, &f.monitor, &f.database, &f.databaseFile)
	if err := fs.Parse(args, stdout); err != nil {
		return err
	}
	if err := applyDatabase(&f.monitor, f.database, f.databaseFile); err != nil {
		return err
	}
	if len(fs.Args()) > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	logger, err := newLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	if err := f.monitor.Validate(); err != nil {
		return usageError{err}
	}
	token := f.adminToken
	if f.adminTokenFile != "" {
		if token != "" {
			return usageError{errors.New("at most one of --admin-token and --admin-token-file may be set")}
		}
		b, err := os.ReadFile(f.adminTokenFile)
		if err != nil {
			return fmt.Errorf("reading --admin-token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return fmt.Errorf("--admin-token-file %s is empty", f.adminTokenFile)
		}
	}

	feedbackToken, err := secret("feedback-token", f.feedbackToken, f.feedbackFile)
	if err != nil {
		return err
	}
	if feedbackToken == "" && f.monitor.DB != "" {
		logger.Warn("no --feedback-token: anyone who reaches serve can send labels", "component", "feedback")
	}

	// ONNX Runtime first: without it nothing can be served.
	libPath, ortVersion, err := ort.Setup(f.ortLib)
	if err != nil {
		return err
	}
	if err := ort.LimitMemory(f.ortMaxMemory); err != nil {
		return fmt.Errorf("--ort-max-memory: %w", err)
	}
	logger.Info("ONNX Runtime loaded", "component", "ort", "path", libPath, "version", ortVersion, "max_memory", f.ortMaxMemory)

	root, follower, err := modelSource(ctx, f, logger)
	if err != nil {
		return err
	}
	st, err := os.Stat(root)
	switch {
	case err != nil:
		return fmt.Errorf("model repository --models %s: %w", root, errors.Unwrap(err))
	case !st.IsDir():
		return fmt.Errorf("model repository --models %s is not a directory", root)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)

	// Monitoring before the repository: its hook sees the first scan's versions.
	mon, err := monitor.New(ctx, monitor.Options{Config: f.monitor, AdminToken: token, FeedbackToken: feedbackToken, Registerer: reg, Logger: logger})
	if err != nil {
		return fmt.Errorf("--predlog-db/--database: %w", err)
	}
	defer mon.Close()

	// The batchers' hybrid dispatch reads the HTTP server's open connections;
	// the repository (and its batchers) exist before the server does.
	var openConns connCounter
	rcfg := repository.DefaultConfig()
	rcfg.Root = root
	rcfg.RescanInterval = f.rescanInterval
	rcfg.Session = ort.SessionOptions{IntraOpThreads: f.intraOpThreads, InterOpThreads: f.interOpThreads, GraphOptimization: f.graphOpt, MaxOutputElements: f.maxOutput}
	repo, err := repository.New(repository.Options{Config: rcfg, Logger: logger.With("component", "repository"), Metrics: m,
		OnChange: mon.OnChange, Wrap: repository.BatchWrap(logger, openConns.load)})
	if err != nil {
		return usageError{err}
	}
	if err := repo.Scan(ctx); err != nil {
		return fmt.Errorf("model repository --models %s: %w", root, err)
	}
	defer repo.Close()
	idx := repo.Index()
	ready := 0
	for _, vi := range idx {
		if vi.State == repository.StateReady {
			ready++
		}
	}
	if len(idx) == 0 {
		logger.Warn("model repository is empty; serving nothing until a model is published", "component", "repository", "dir", root)
	} else {
		logger.Info("model repository scanned", "component", "repository", "dir", root, "versions", len(idx), "ready", ready)
	}

	acfg := api.DefaultConfig()
	acfg.BodyLimit, acfg.ReadTimeout, acfg.WriteTimeout, acfg.IdleTimeout = f.bodyLimit, f.readTimeout, f.writeTimeout, f.idleTimeout
	acfg.InferTimeout, acfg.AdminToken, acfg.MLflowModel = f.inferTimeout, token, f.mlflowModel
	acfg.InsecureAdmin = f.insecureAdmin
	switch {
	case token != "":
		logger.Info("repository load/unload and the feedback export require the admin bearer token", "component", "api")
	case f.insecureAdmin:
		logger.Warn("--insecure-admin: anyone who reaches serve can load and unload models", "component", "api")
	default:
		logger.Warn("no --admin-token: repository load/unload and the feedback export are disabled", "component", "api")
	}
	srv, err := api.New(api.Options{Config: acfg, Repository: repo, Logger: logger.With("component", "api"),
		Metrics: m, Gatherer: reg, Version: version, Observers: []api.Observer{mon}})
	if err != nil {
		return usageError{err}
	}
	mon.Register(srv.App())
	openConns.srv.Store(srv)

	if ln == nil {
		l, err := openListener("--listen", f.listen)
		if err != nil {
			return err
		}
		ln = l
	}
	logger.Info("serving", "component", "api", "addr", ln.Addr().String())
	if f.pprofListen != "" {
		stopPprof, err := servePprof(f.pprofListen, logger)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	// One run group: the HTTP server, the repository (watcher and the
	// versions' batchers), the registry follower and the monitor (drift,
	// prediction log); the first to fail, or ctx, starts the one shutdown
	// path, in order: readiness drops, HTTP drains, the watcher and the
	// follower stop and the batchers drain (the repository's Run returns),
	// the prediction log writes what is queued (the monitor's Run returns);
	// last, the database and the sessions close.
	g, gctx := errgroup.WithContext(ctx)
	repoCtx, stopRepo := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRepo()
	monCtx, stopMon := context.WithCancel(context.WithoutCancel(ctx))
	defer stopMon()
	repoDone := make(chan struct{})
	g.Go(func() error { return mon.Run(monCtx) })
	g.Go(func() error {
		defer close(repoDone)
		if err := repo.Run(repoCtx); err != nil {
			return fmt.Errorf("model repository watcher: %w", err)
		}
		return nil
	})
	if follower != nil {
		follower.SetRepository(repo)
		g.Go(func() error {
			if err := follower.Run(repoCtx); err != nil {
				return fmt.Errorf("registry follower: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		err := srv.Serve(ln)
		if err == nil && gctx.Err() == nil {
			err = errors.New("stopped before shutdown")
		}
		if err != nil {
			return fmt.Errorf("HTTP server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		// On a signal: readiness fails, keep-alive clients are told to
		// leave for --shutdown-delay, then the listener closes. When a part
		// failed instead, there is nothing to wait for.
		delay := time.Duration(0)
		if ctx.Err() != nil {
			delay = f.shutdownDelay
			logger.Info("shutting down", "component", "serve", "delay", delay, "timeout", f.shutdownTimeout)
		}
		sctx, cancel := context.WithTimeout(context.Background(), delay+f.shutdownTimeout)
		defer cancel()
		if err := srv.Drain(sctx, delay); err != nil {
			logger.Warn("HTTP shutdown did not drain in time", "component", "api", "err", err)
		}
		stopRepo() // the watcher, the registry follower and the batchers
		<-repoDone
		stopMon() // the prediction log writes what the batchers answered
		return nil
	})
	srv.SetReady(true)
	runErr := g.Wait()
	if err := mon.Close(); err != nil {
		logger.Warn("closing the prediction database", "component", "predlog", "err", err)
	}
	if err := repo.Close(); err != nil {
		logger.Warn("closing sessions", "component", "repository", "err", err)
	}
	logger.Info("stopped", "component", "serve", "live_sessions", ort.LiveSessions())
	return runErr
}

// modelSource splits --models into one repository folder or models:/
// references. With references it builds the registry follower, downloads
// the current versions into --registry-cache (a registry that cannot be
// reached leaves the cached versions serving) and returns that folder.
func modelSource(ctx context.Context, f serveFlags, logger *slog.Logger) (string, *modelsource.Follower, error) {
	var dirs []string
	var refs []modelsource.Ref
	for _, m := range f.models {
		if !modelsource.IsRef(m) {
			dirs = append(dirs, m)
			continue
		}
		ref, err := modelsource.ParseRef(m)
		if err != nil {
			return "", nil, usageError{fmt.Errorf("--models %w", err)}
		}
		refs = append(refs, ref)
	}
	switch {
	case len(refs) == 0 && len(dirs) == 0:
		return "./models", nil, nil
	case len(refs) == 0 && len(dirs) == 1:
		return dirs[0], nil, nil
	case len(refs) == 0:
		return "", nil, usageError{fmt.Errorf("--models: one repository folder, not %d (%s)", len(dirs), strings.Join(dirs, ", "))}
	case len(dirs) > 0:
		return "", nil, usageError{fmt.Errorf("--models: either a repository folder or models:/ references, not both (%s)", strings.Join(dirs, ", "))}
	case f.tracking.uri == "":
		return "", nil, usageError{errors.New("--models models:/…: set --tracking-uri or MLFLOW_TRACKING_URI to the MLflow server")}
	}
	client, err := mlflow.New(mlflow.Options{Config: f.tracking.mlflowConfig(), Logger: logger})
	if err != nil {
		return "", nil, usageError{fmt.Errorf("--tracking-uri=%q: %w", f.tracking.uri, err)}
	}
	fl, err := modelsource.New(modelsource.Config{Refs: refs, Dir: f.registryCache, Interval: f.registryPoll}, client, logger)
	if err != nil {
		return "", nil, usageError{err}
	}
	if err := fl.Sync(ctx); err != nil {
		logger.Warn("registry not fully synced at start; serving what --registry-cache holds and polling", "component", "modelsource", "dir", fl.Dir(), "err", err)
	}
	return fl.Dir(), fl, nil
}
