package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/flywheel-ml/flywheel/internal/database"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/fallback"
	"github.com/flywheel-ml/flywheel/tracker/localstore"
	"github.com/flywheel-ml/flywheel/tracker/mlflow"
)

// trackingFlags selects the experiment tracker: MLflow (with the local
// store as its fallback) when a tracking URI is set, the local store alone
// otherwise. Commands that track runs (runs, train, trainer) register these
// flags.
type trackingFlags struct {
	uri, token, username, password string
	db                             string
	// shared is the command's shared database (the trainer's --database):
	// a PostgreSQL one also holds the tracker's store unless --tracking-db
	// says otherwise.
	shared  string
	timeout time.Duration
	retries int
}

func (f *trackingFlags) register(fs *flagSet) {
	f.registerServer(fs, "MLflow tracking server URL (e.g. http://127.0.0.1:5000); empty = track in the local store only")
	fs.String(&f.db, "tracking-db", "", "", "the tracker's local store (the store without MLflow, the fallback with it): a SQLite file (artifacts in <name>-artifacts/ beside it), or postgres://user:password@host:5432/db shared by every process (artifacts in the database); default: the PostgreSQL database of --database or "+database.EnvURL+" if any, else "+localstore.DefaultConfig().URL)
}

// storeURL is the local store's database: --tracking-db, else a shared
// PostgreSQL database (--database, then FLYWHEEL_DATABASE_URL), else the
// default SQLite file. A shared SQLite file is never used: it holds
// another store's schema.
func (f *trackingFlags) storeURL() string {
	if f.db != "" {
		return f.db
	}
	for _, u := range []string{f.shared, os.Getenv(database.EnvURL)} {
		if database.IsPostgres(u) {
			return u
		}
	}
	return localstore.DefaultConfig().URL
}

// registerServer registers the flags that reach the MLflow server only.
func (f *trackingFlags) registerServer(fs *flagSet, uriUsage string) {
	fs.String(&f.uri, "tracking-uri", "MLFLOW_TRACKING_URI", "", uriUsage)
	fs.String(&f.token, "tracking-token", "MLFLOW_TRACKING_TOKEN", "", "bearer token for the MLflow server")
	fs.String(&f.username, "tracking-username", "MLFLOW_TRACKING_USERNAME", "", "basic-auth user for the MLflow server")
	fs.String(&f.password, "tracking-password", "MLFLOW_TRACKING_PASSWORD", "", "basic-auth password for the MLflow server")
	fs.Duration(&f.timeout, "tracking-timeout", "", mlflow.DefaultConfig().Timeout, "timeout of one MLflow request attempt")
	fs.Int(&f.retries, "tracking-retries", "", mlflow.DefaultConfig().RetryMax, "retries of a failed MLflow request (connection errors, 429, 5xx) with exponential backoff and jitter")
}

// tracking is an opened tracker.
type tracking struct {
	tracker.Tracker
	kind   string // "mlflow", or the local store's dialect ("sqlite", "postgres"), as recorded in model cards
	local  *localstore.Store
	remote *mlflow.Client    // nil without a tracking URI
	fb     *fallback.Tracker // nil without a tracking URI
}

func (f *trackingFlags) mlflowConfig() mlflow.Config {
	cfg := mlflow.DefaultConfig()
	cfg.TrackingURI = f.uri
	cfg.Token = mlflow.Secret(f.token)
	cfg.Username = f.username
	cfg.Password = mlflow.Secret(f.password)
	cfg.Timeout = f.timeout
	cfg.RetryMax = f.retries
	return cfg
}

func (f *trackingFlags) open(ctx context.Context, log *slog.Logger) (*tracking, error) {
	cfg := localstore.DefaultConfig()
	cfg.URL = f.storeURL()
	local, err := localstore.Open(ctx, localstore.Options{Config: cfg, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("--tracking-db=%q: %w", database.Redact(cfg.URL), err)
	}
	if f.uri == "" {
		return &tracking{Tracker: local, kind: string(local.Dialect()), local: local}, nil
	}
	remote, err := mlflow.New(mlflow.Options{Config: f.mlflowConfig(), Logger: log})
	if err != nil {
		local.Close()
		return nil, usageError{fmt.Errorf("--tracking-uri=%q: %w", f.uri, err)}
	}
	fb, err := fallback.New(fallback.Options{Remote: remote, Local: local, Logger: log})
	if err != nil {
		local.Close()
		return nil, err
	}
	return &tracking{Tracker: fb, kind: "mlflow", local: local, remote: remote, fb: fb}, nil
}

// runSyncer replays unsynced runs every interval until ctx ends (an actor
// for long-running services such as the trainer); without a tracking URI
// there is nothing to replay and it just waits for ctx.
func (t *tracking) runSyncer(ctx context.Context, interval time.Duration) error {
	if t.fb == nil {
		<-ctx.Done()
		return nil
	}
	return (&fallback.Syncer{Tracker: t.fb, Interval: interval}).Run(ctx)
}

// experimentName resolves an experiment id (MLflow's with a tracking URI,
// the local store's without) to its name: runs are filed by name, so the
// local fallback and MLflow agree on the experiment.
func (t *tracking) experimentName(ctx context.Context, id string) (string, error) {
	if t.remote != nil {
		e, err := t.remote.GetExperiment(ctx, id)
		if err != nil {
			return "", err
		}
		return e.Name, nil
	}
	return t.local.ExperimentName(ctx, id)
}
