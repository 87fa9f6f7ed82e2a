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

	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/metrics"
	"github.com/flywheel-ml/flywheel/server/monitor"
	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/server/repository"
)

// serveFlags is the configuration of `flywheel serve`.
type serveFlags struct {
	models          string
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
	rescanInterval  time.Duration
	intraOpThreads  int
	maxOutput       int64
	interOpThreads  int
	graphOpt        string
	mlflowModel     string
	logFormat       string
	logLevel        string
	pprofListen     string
	monitor         monitor.Config
	database        string
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
	var f serveFlags
	fs := newFlagSet("serve", "Serve every ONNX model in a model repository over the Open Inference Protocol (KServe V2) and MLflow scoring REST APIs, hot-reloading new versions.")
	fs.String(&f.models, "models", "", "./models", "model repository folder: <dir>/<model>/<version>/model.onnx (+ model.json, <dir>/<model>/config.yaml)")
	fs.String(&f.listen, "listen", "", ":8080", "HTTP listen address")
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
	fs.Duration(&f.rescanInterval, "rescan-interval", "", 5*time.Second, "periodic repository rescan, the fallback for missed file events (0: off)")
	fs.Int(&f.intraOpThreads, "intra-op-threads", "", 1, "ONNX Runtime intra-op threads per session (config.yaml may override)")
	fs.Int64(&f.maxOutput, "max-output-elements", "", ort.DefaultMaxOutputElements, "most elements of one model output per request; larger outputs answer 422 before they are encoded or logged (config.yaml session.max_output_elements overrides; 0: no cap)")
	fs.Int(&f.interOpThreads, "inter-op-threads", "", 1, "ONNX Runtime inter-op threads per session (config.yaml may override)")
	fs.String(&f.graphOpt, "graph-optimization", "", "all", "ONNX Runtime graph optimisation: disabled, basic, extended or all")
	fs.String(&f.mlflowModel, "mlflow-model", "", "", "model served by POST /invocations without ?model= when several are loaded")
	fs.String(&f.logFormat, "log-format", "", "text", "log format: text or json")
	fs.String(&f.logLevel, "log-level", "", "info", "log level: debug, info, warn or error")
	fs.String(&f.pprofListen, "pprof-listen", "", "", "address for Go's /debug/pprof profiling endpoints, e.g. 127.0.0.1:6060 (empty: off)")
	addMonitorFlags(fs, &f.monitor, &f.database)
	if err := fs.Parse(args, stdout); err != nil {
		return err
	}
	applyDatabase(&f.monitor, f.database)
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
	logger.Info("ONNX Runtime loaded", "component", "ort", "path", libPath, "version", ortVersion)

	st, err := os.Stat(f.models)
	switch {
	case err != nil:
		return fmt.Errorf("model repository --models %s: %w", f.models, errors.Unwrap(err))
	case !st.IsDir():
		return fmt.Errorf("model repository --models %s is not a directory", f.models)
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
	rcfg.Root = f.models
	rcfg.RescanInterval = f.rescanInterval
	rcfg.Session = ort.SessionOptions{IntraOpThreads: f.intraOpThreads, InterOpThreads: f.interOpThreads, GraphOptimization: f.graphOpt, MaxOutputElements: f.maxOutput}
	repo, err := repository.New(repository.Options{Config: rcfg, Logger: logger.With("component", "repository"), Metrics: m,
		OnChange: mon.OnChange, Wrap: repository.BatchWrap(logger, openConns.load)})
	if err != nil {
		return usageError{err}
	}
	if err := repo.Scan(ctx); err != nil {
		return fmt.Errorf("model repository --models %s: %w", f.models, err)
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
		logger.Warn("model repository is empty; serving nothing until a model is published", "component", "repository", "dir", f.models)
	} else {
		logger.Info("model repository scanned", "component", "repository", "dir", f.models, "versions", len(idx), "ready", ready)
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

	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listening on --listen %s: %w", f.listen, err)
	}
	logger.Info("serving", "component", "api", "addr", ln.Addr().String())
	if f.pprofListen != "" {
		stopPprof, err := servePprof(f.pprofListen, logger)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	watchCtx, stopWatch := context.WithCancel(context.Background())
	mon.Start()
	watchDone := make(chan error, 1)
	go func() { watchDone <- repo.Run(watchCtx) }()
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ln) }()
	srv.SetReady(true)

	var serveErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "component", "serve", "timeout", f.shutdownTimeout)
	case serveErr = <-serveDone:
	}
	// Order: readiness drops, HTTP drains, the watcher stops, the
	// prediction log writes what is queued, sessions and the database close.
	srv.SetReady(false)
	sctx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("HTTP shutdown did not drain in time", "component", "api", "err", err)
	}
	stopWatch()
	<-watchDone
	if err := mon.Close(); err != nil {
		logger.Warn("closing the prediction database", "component", "predlog", "err", err)
	}
	if err := repo.Close(); err != nil {
		logger.Warn("closing sessions", "component", "repository", "err", err)
	}
	logger.Info("stopped", "component", "serve", "live_sessions", ort.LiveSessions())
	if serveErr != nil {
		return fmt.Errorf("HTTP server: %w", serveErr)
	}
	return nil
}
