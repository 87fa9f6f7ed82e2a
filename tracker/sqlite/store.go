// Package sqlite is the embedded tracker backend: one SQLite database (WAL,
// busy timeout, versioned migrations) holding experiments, runs, params,
// metrics, tags, dataset inputs and the model registry, with artifact files
// in a directory beside the database. Several processes may log to one
// database at once.
package sqlite

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/flywheel-ml/flywheel/internal/database"
	"github.com/flywheel-ml/flywheel/tracker"
)

// Sync states of a run (see tracker/fallback).
const (
	StateLocal    = "local"    // no MLflow configured when it ran, or MLflow rejected it; replayed only by sync --all
	StateMirrored = "mirrored" // every write also reached MLflow so far
	StateUnsynced = "unsynced" // MLflow missed something: sync must replay
	StateSynced   = "synced"   // replayed completely
)

// Config configures the store.
type Config struct {
	Path        string        `yaml:"path"`         // database file
	ArtifactDir string        `yaml:"artifact_dir"` // default: <dir>/<name>-artifacts beside Path
	BusyTimeout time.Duration `yaml:"busy_timeout"`
}

// DefaultConfig uses var/tracking.db and a 30s busy timeout.
func DefaultConfig() Config {
	return Config{Path: "var/tracking.db", BusyTimeout: 30 * time.Second}
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.Path == "" {
		return errors.New("path: the database file must be set")
	}
	if c.BusyTimeout < 0 {
		return fmt.Errorf("busy_timeout %s: must not be negative", c.BusyTimeout)
	}
	return nil
}

// ArtifactRoot is the artifact directory for the config.
func (c Config) ArtifactRoot() string {
	if c.ArtifactDir != "" {
		return c.ArtifactDir
	}
	base := strings.TrimSuffix(filepath.Base(c.Path), filepath.Ext(c.Path))
	return filepath.Join(filepath.Dir(c.Path), base+"-artifacts")
}

// Options builds a Store.
type Options struct {
	Config Config
	Logger *slog.Logger
}

// Store is a tracker.Tracker over SQLite.
type Store struct {
	db       *sql.DB
	cfg      Config
	artifact string
	log      *slog.Logger
	now      func() time.Time
}

var _ tracker.Tracker = (*Store)(nil)

// migrations are applied in order; user_version records how many ran.
var migrations = []string{
	`CREATE TABLE experiments (
		id INTEGER PRIMARY KEY AUTOINCREMENT,
		name TEXT NOT NULL UNIQUE,
		created INTEGER NOT NULL
	);
	CREATE TABLE runs (
		id TEXT PRIMARY KEY,
		experiment_id INTEGER NOT NULL REFERENCES experiments(id),
		name TEXT NOT NULL,
		status TEXT NOT NULL,
		start_time INTEGER NOT NULL,
		end_time INTEGER NOT NULL DEFAULT 0,
		remote_id TEXT,
		sync_state TEXT NOT NULL DEFAULT 'local'
	);
	CREATE INDEX runs_experiment ON runs(experiment_id, start_time);
	CREATE UNIQUE INDEX runs_remote ON runs(remote_id) WHERE remote_id IS NOT NULL;
	CREATE TABLE params (run_id TEXT NOT NULL REFERENCES runs(id), key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (run_id, key));
	CREATE TABLE tags (run_id TEXT NOT NULL REFERENCES runs(id), key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (run_id, key));
	CREATE TABLE metrics (
		seq INTEGER PRIMARY KEY AUTOINCREMENT,
		run_id TEXT NOT NULL REFERENCES runs(id),
		key TEXT NOT NULL,
		value REAL,
		is_nan INTEGER NOT NULL DEFAULT 0,
		timestamp INTEGER NOT NULL,
		step INTEGER NOT NULL
	);
	CREATE INDEX metrics_run_key ON metrics(run_id, key);
	CREATE TABLE datasets (
		run_id TEXT NOT NULL REFERENCES runs(id),
		name TEXT NOT NULL, digest TEXT NOT NULL, source_type TEXT NOT NULL, source TEXT NOT NULL,
		schema TEXT NOT NULL DEFAULT '', profile TEXT NOT NULL DEFAULT '', context TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (run_id, name, digest, context)
	);
	CREATE TABLE artifacts (run_id TEXT NOT NULL REFERENCES runs(id), path TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (run_id, path));`,
	`CREATE TABLE registered_models (name TEXT PRIMARY KEY, created INTEGER NOT NULL);
	CREATE TABLE model_versions (
		name TEXT NOT NULL REFERENCES registered_models(name),
		version INTEGER NOT NULL,
		run_id TEXT NOT NULL REFERENCES runs(id),
		artifact_path TEXT NOT NULL,
		created INTEGER NOT NULL,
		remote_version TEXT,
		PRIMARY KEY (name, version)
	);
	CREATE TABLE aliases (
		name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL,
		synced INTEGER NOT NULL DEFAULT 1,
		PRIMARY KEY (name, alias),
		FOREIGN KEY (name, version) REFERENCES model_versions(name, version)
	);`,
	// rev counts a run's writes so a sync marks it synced only if nothing
	// was written after the snapshot it replayed.
	`ALTER TABLE runs ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;`,
	// a model version's description and tags (JSON), replayed to MLflow.
	`ALTER TABLE model_versions ADD COLUMN description TEXT NOT NULL DEFAULT '';
	ALTER TABLE model_versions ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';`,
}

// SchemaVersion is the number of migrations this build knows.
var SchemaVersion = len(migrations)

// Open opens (creating if needed) the database and migrates it.
func Open(ctx context.Context, opts Options) (*Store, error) {
	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sqlite tracker config: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", filepath.Dir(cfg.Path), err)
	}
	art := cfg.ArtifactRoot()
	if err := os.MkdirAll(art, 0o755); err != nil {
		return nil, fmt.Errorf("creating artifact dir %s: %w", art, err)
	}
	if abs, err := filepath.Abs(art); err == nil {
		art = abs
	}
	busy := cfg.BusyTimeout
	if busy == 0 {
		busy = 30 * time.Second
	}
	// The SQLite file is opened like the prediction log's and the job
	// queue's (internal/database); its schema keeps its own migrations.
	d, err := database.Open(ctx, "sqlite:"+cfg.Path, database.Options{MaxOpenConns: 4, SQLite: url.Values{
		"_journal_mode": {"WAL"}, "_busy_timeout": {strconv.FormatInt(busy.Milliseconds(), 10)}, "_txlock": {"immediate"},
		"_foreign_keys": {"on"}, "_synchronous": {"NORMAL"},
	}})
	if err != nil {
		return nil, err
	}
	db := d.DB
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{db: db, cfg: cfg, artifact: art, log: log.With("component", "tracker/sqlite"), now: time.Now}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrating %s: %w", cfg.Path, err)
	}
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var v int
		if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
			return err
		}
		if v > len(migrations) {
			return fmt.Errorf("database schema version %d is newer than this build (%d)", v, len(migrations))
		}
		for i := v; i < len(migrations); i++ {
			if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
			s.log.Info("applied schema migration", "version", i+1)
		}
		_, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations)))
		return err
	})
}

// tx runs fn in an immediate transaction, retrying when SQLite reports
// the database busy beyond the busy timeout's first wait.
func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	for attempt := 0; ; attempt++ {
		err := s.tx1(ctx, fn)
		var se sqlite3.Error
		if err != nil && errors.As(err, &se) && (se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked) && attempt < 5 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt+1) * 50 * time.Millisecond):
			}
			continue
		}
		return err
	}
}

func (s *Store) tx1(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Path is the database file.
func (s *Store) Path() string { return s.cfg.Path }

// --- experiments ------------------------------------------------------------

// GetExperimentByName returns the experiment or ErrNotFound.
func (s *Store) GetExperimentByName(ctx context.Context, name string) (tracker.Experiment, error) {
	var id int64
	err := s.db.QueryRowContext(ctx, "SELECT id FROM experiments WHERE name = ?", name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return tracker.Experiment{}, tracker.Errorf(tracker.ErrNotFound, "experiment %q", name)
	}
	if err != nil {
		return tracker.Experiment{}, fmt.Errorf("looking up experiment %q: %w", name, err)
	}
	return tracker.Experiment{ID: strconv.FormatInt(id, 10), Name: name, ArtifactLocation: s.artifact, Tags: map[string]string{}}, nil
}

// GetOrCreateExperiment creates the experiment when missing.
func (s *Store) GetOrCreateExperiment(ctx context.Context, name string) (tracker.Experiment, error) {
	if name == "" {
		return tracker.Experiment{}, tracker.Errorf(tracker.ErrInvalid, "experiment name is empty")
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT OR IGNORE INTO experiments(name, created) VALUES (?, ?)", name, s.now().UnixMilli())
		return err
	})
	if err != nil {
		return tracker.Experiment{}, fmt.Errorf("creating experiment %q: %w", name, err)
	}
	return s.GetExperimentByName(ctx, name)
}

// ExperimentName returns the name of a local experiment id.
func (s *Store) ExperimentName(ctx context.Context, id string) (string, error) {
	return s.experimentName(ctx, id)
}

func (s *Store) experimentName(ctx context.Context, id string) (string, error) {
	var name string
	err := s.db.QueryRowContext(ctx, "SELECT name FROM experiments WHERE id = ?", id).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", tracker.Errorf(tracker.ErrNotFound, "experiment id %s", id)
	}
	return name, err
}

// --- runs -------------------------------------------------------------------

// NewRunID returns 32 random hex characters, like MLflow's run ids.
func NewRunID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// StartRun creates a run in the local sync state.
func (s *Store) StartRun(ctx context.Context, experimentID string, opts tracker.RunOptions) (tracker.RunInfo, error) {
	return s.StartRunWithID(ctx, experimentID, NewRunID(), StateLocal, opts)
}

// StartRunWithID creates a run with a given id and sync state.
func (s *Store) StartRunWithID(ctx context.Context, experimentID, id, state string, opts tracker.RunOptions) (tracker.RunInfo, error) {
	if _, err := s.experimentName(ctx, experimentID); err != nil {
		return tracker.RunInfo{}, err
	}
	tags := opts.SystemTags()
	name := opts.Name
	if name == "" {
		name = "run-" + id[:8]
		tags[tracker.TagRunName] = name
	}
	start := tracker.NowMillis(opts.StartTime)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO runs(id, experiment_id, name, status, start_time, sync_state) VALUES (?,?,?,?,?,?)",
			id, experimentID, name, tracker.StatusRunning, start, state); err != nil {
			return err
		}
		return upsertTags(ctx, tx, id, tags)
	})
	if err != nil {
		return tracker.RunInfo{}, fmt.Errorf("starting run: %w", err)
	}
	return tracker.RunInfo{ID: id, ExperimentID: experimentID, Name: name, Status: tracker.StatusRunning, StartTime: start,
		ArtifactURI: s.runArtifactURI(id), LifecycleStage: "active"}, nil
}

func (s *Store) runArtifactURI(id string) string {
	return "file://" + filepath.ToSlash(filepath.Join(s.artifact, id))
}

func upsertTags(ctx context.Context, tx *sql.Tx, runID string, tags map[string]string) error {
	for k, v := range tags {
		if _, err := tx.ExecContext(ctx, "INSERT INTO tags(run_id, key, value) VALUES (?,?,?) ON CONFLICT(run_id, key) DO UPDATE SET value = excluded.value", runID, k, v); err != nil {
			return err
		}
	}
	return nil
}

// touch records a write to a run: rev+1, and a synced run becomes unsynced
// again so the new data is replayed.
func touch(ctx context.Context, tx *sql.Tx, runID string) error {
	res, err := tx.ExecContext(ctx, `UPDATE runs SET rev = rev + 1,
		sync_state = CASE WHEN sync_state = 'synced' THEN 'unsynced' ELSE sync_state END WHERE id = ?`, runID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return tracker.Errorf(tracker.ErrNotFound, "run %s", runID)
	}
	return nil
}

func (s *Store) runExists(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, id string) error {
	var one int
	err := q.QueryRowContext(ctx, "SELECT 1 FROM runs WHERE id = ?", id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return tracker.Errorf(tracker.ErrNotFound, "run %s", id)
	}
	return err
}

// LogBatch stores metrics (appended), params (immutable) and tags (upserted)
// in one transaction.
func (s *Store) LogBatch(ctx context.Context, runID string, metrics []tracker.Metric, params []tracker.Param, tags []tracker.Tag) error {
	for _, m := range metrics {
		if err := tracker.ValidateKey(m.Key); err != nil {
			return err
		}
	}
	for _, p := range params {
		if err := tracker.ValidateKey(p.Key); err != nil {
			return err
		}
		if len(p.Value) > tracker.MaxParamValueLength {
			return tracker.Errorf(tracker.ErrInvalid, "param %q: value of %d bytes exceeds %d", p.Key, len(p.Value), tracker.MaxParamValueLength)
		}
	}
	for _, t := range tags {
		if err := tracker.ValidateKey(t.Key); err != nil {
			return err
		}
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := touch(ctx, tx, runID); err != nil {
			return err
		}
		for _, p := range params {
			if p.Key == "" {
				return tracker.Errorf(tracker.ErrInvalid, "param key is empty")
			}
			var old string
			err := tx.QueryRowContext(ctx, "SELECT value FROM params WHERE run_id = ? AND key = ?", runID, p.Key).Scan(&old)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				if _, err := tx.ExecContext(ctx, "INSERT INTO params(run_id, key, value) VALUES (?,?,?)", runID, p.Key, p.Value); err != nil {
					return err
				}
			case err != nil:
				return err
			case old != p.Value:
				return tracker.Errorf(tracker.ErrInvalid, "changing param values is not allowed: param %q of run %s is %q, got %q", p.Key, runID, old, p.Value)
			}
		}
		tm := map[string]string{}
		for _, t := range tags {
			tm[t.Key] = t.Value
		}
		if err := upsertTags(ctx, tx, runID, tm); err != nil {
			return err
		}
		if len(metrics) == 0 {
			return nil
		}
		stmt, err := tx.PrepareContext(ctx, "INSERT INTO metrics(run_id, key, value, is_nan, timestamp, step) VALUES (?,?,?,?,?,?)")
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, m := range metrics {
			var v any = m.Value
			nan := 0
			if math.IsNaN(m.Value) {
				v, nan = nil, 1
			}
			if _, err := stmt.ExecContext(ctx, runID, m.Key, v, nan, m.Timestamp, m.Step); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("logging to run %s: %w", runID, err)
	}
	return nil
}

// LogInputs links datasets to the run (once per name, digest and context).
func (s *Store) LogInputs(ctx context.Context, runID string, datasets []tracker.Dataset) error {
	for _, d := range datasets {
		if err := tracker.ValidateDataset(d); err != nil {
			return err
		}
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := touch(ctx, tx, runID); err != nil {
			return err
		}
		for _, d := range datasets {
			if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO datasets(run_id, name, digest, source_type, source, schema, profile, context)
				VALUES (?,?,?,?,?,?,?,?)`, runID, d.Name, d.Digest, d.SourceType, d.Source, d.Schema, d.Profile, d.Context); err != nil {
				return err
			}
		}
		return nil
	})
}

// cleanRel validates a relative artifact path.
func cleanRel(p string) (string, error) {
	c := strings.Trim(path.Clean("/"+strings.ReplaceAll(p, "\\", "/")), "/")
	if c == "" || c == "." {
		return "", tracker.Errorf(tracker.ErrInvalid, "artifact path %q", p)
	}
	return c, nil
}

// LogArtifact writes the file atomically under <artifact dir>/<run>/<path>.
func (s *Store) LogArtifact(ctx context.Context, runID, rel string, r io.Reader) error {
	rel, err := cleanRel(rel)
	if err != nil {
		return err
	}
	if err := s.runExists(ctx, s.db, runID); err != nil {
		return err
	}
	dst := filepath.Join(s.artifact, runID, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".upload-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing artifact %s: %w", rel, err)
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return err
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := touch(ctx, tx, runID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO artifacts(run_id, path, size, sha256) VALUES (?,?,?,?)
			ON CONFLICT(run_id, path) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256`, runID, rel, n, hex.EncodeToString(h.Sum(nil)))
		return err
	})
}

// EndRun sets status and end time.
func (s *Store) EndRun(ctx context.Context, runID string, status tracker.RunStatus, end time.Time) error {
	if !status.Valid() {
		return tracker.Errorf(tracker.ErrInvalid, "run status %q", status)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := touch(ctx, tx, runID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "UPDATE runs SET status = ?, end_time = ? WHERE id = ?", status, tracker.NowMillis(end), runID)
		return err
	})
}

// --- reading ----------------------------------------------------------------

// LocalRun is a run with its sync bookkeeping.
type LocalRun struct {
	tracker.Run
	ExperimentName string
	RemoteID       string
	SyncState      string
	Rev            int64 // write counter, see MarkSynced
}

// Resolve maps a local or remote run id onto the local id.
func (s *Store) Resolve(ctx context.Context, id string) (string, error) {
	var local string
	err := s.db.QueryRowContext(ctx, "SELECT id FROM runs WHERE id = ? OR remote_id = ? ORDER BY id = ? DESC LIMIT 1", id, id, id).Scan(&local)
	if errors.Is(err, sql.ErrNoRows) {
		return "", tracker.Errorf(tracker.ErrNotFound, "run %s", id)
	}
	return local, err
}

// GetRun returns a run by local (or remote) id.
func (s *Store) GetRun(ctx context.Context, runID string) (tracker.Run, error) {
	lr, err := s.GetLocalRun(ctx, runID)
	return lr.Run, err
}

// GetLocalRun returns a run with its sync state.
func (s *Store) GetLocalRun(ctx context.Context, runID string) (LocalRun, error) {
	id, err := s.Resolve(ctx, runID)
	if err != nil {
		return LocalRun{}, err
	}
	runs, err := s.loadRuns(ctx, "r.id = ?", id)
	if err != nil {
		return LocalRun{}, err
	}
	if len(runs) == 0 {
		return LocalRun{}, tracker.Errorf(tracker.ErrNotFound, "run %s", runID)
	}
	return runs[0], nil
}

func (s *Store) loadRuns(ctx context.Context, where string, args ...any) ([]LocalRun, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT r.id, r.experiment_id, e.name, r.name, r.status, r.start_time, r.end_time, COALESCE(r.remote_id, ''), r.sync_state, r.rev
		FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE `+where+` ORDER BY r.start_time DESC, r.id`, args...)
	if err != nil {
		return nil, err
	}
	var runs []LocalRun
	idx := map[string]int{}
	for rows.Next() {
		var lr LocalRun
		var st string
		if err := rows.Scan(&lr.Info.ID, &lr.Info.ExperimentID, &lr.ExperimentName, &lr.Info.Name, &st, &lr.Info.StartTime, &lr.Info.EndTime, &lr.RemoteID, &lr.SyncState, &lr.Rev); err != nil {
			rows.Close()
			return nil, err
		}
		lr.Info.Status = tracker.RunStatus(st)
		lr.Info.ArtifactURI = s.runArtifactURI(lr.Info.ID)
		lr.Info.LifecycleStage = "active"
		lr.Params, lr.Tags, lr.Metrics = map[string]string{}, map[string]string{}, map[string]tracker.Metric{}
		idx[lr.Info.ID] = len(runs)
		runs = append(runs, lr)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range runs {
		r := &runs[i]
		id := r.Info.ID
		if err := s.each(ctx, "SELECT key, value FROM params WHERE run_id = ?", id, func(k, v string) { r.Params[k] = v }); err != nil {
			return nil, err
		}
		if err := s.each(ctx, "SELECT key, value FROM tags WHERE run_id = ?", id, func(k, v string) { r.Tags[k] = v }); err != nil {
			return nil, err
		}
		ms, err := s.metrics(ctx, id, "")
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			cur, ok := r.Metrics[m.Key]
			if !ok || m.Step > cur.Step || m.Step == cur.Step && m.Timestamp >= cur.Timestamp {
				r.Metrics[m.Key] = m
			}
		}
		drows, err := s.db.QueryContext(ctx, "SELECT name, digest, source_type, source, schema, profile, context FROM datasets WHERE run_id = ? ORDER BY rowid", id)
		if err != nil {
			return nil, err
		}
		for drows.Next() {
			var d tracker.Dataset
			if err := drows.Scan(&d.Name, &d.Digest, &d.SourceType, &d.Source, &d.Schema, &d.Profile, &d.Context); err != nil {
				drows.Close()
				return nil, err
			}
			r.Datasets = append(r.Datasets, d)
		}
		drows.Close()
	}
	return runs, nil
}

func (s *Store) each(ctx context.Context, q, id string, fn func(k, v string)) error {
	rows, err := s.db.QueryContext(ctx, q, id)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return err
		}
		fn(k, v)
	}
	return rows.Err()
}

func (s *Store) metrics(ctx context.Context, runID, key string) ([]tracker.Metric, error) {
	q := "SELECT key, value, is_nan, timestamp, step FROM metrics WHERE run_id = ?"
	args := []any{runID}
	if key != "" {
		q += " AND key = ?"
		args = append(args, key)
	}
	rows, err := s.db.QueryContext(ctx, q+" ORDER BY seq", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []tracker.Metric
	for rows.Next() {
		var m tracker.Metric
		var v sql.NullFloat64
		var nan int
		if err := rows.Scan(&m.Key, &v, &nan, &m.Timestamp, &m.Step); err != nil {
			return nil, err
		}
		m.Value = v.Float64
		if nan == 1 {
			m.Value = math.NaN()
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Metrics returns every metric value of a run in logging order.
func (s *Store) Metrics(ctx context.Context, runID string) ([]tracker.Metric, error) {
	return s.metrics(ctx, runID, "")
}

// MetricHistory returns every value of key.
func (s *Store) MetricHistory(ctx context.Context, runID, key string) ([]tracker.Metric, error) {
	id, err := s.Resolve(ctx, runID)
	if err != nil {
		return nil, err
	}
	return s.metrics(ctx, id, key)
}

// SearchRuns filters and orders runs in Go with tracker.ParseFilter.
func (s *Store) SearchRuns(ctx context.Context, q tracker.SearchQuery) ([]tracker.Run, error) {
	lrs, err := s.SearchLocalRuns(ctx, q)
	if err != nil {
		return nil, err
	}
	out := make([]tracker.Run, len(lrs))
	for i, r := range lrs {
		out[i] = r.Run
	}
	return out, nil
}

// SearchLocalRuns is SearchRuns with the sync bookkeeping.
func (s *Store) SearchLocalRuns(ctx context.Context, q tracker.SearchQuery) ([]LocalRun, error) {
	f, err := tracker.ParseFilter(q.Filter)
	if err != nil {
		return nil, err
	}
	where, args := "1 = 1", []any{}
	if len(q.ExperimentIDs) > 0 {
		where = "r.experiment_id IN (" + strings.TrimSuffix(strings.Repeat("?,", len(q.ExperimentIDs)), ",") + ")"
		for _, id := range q.ExperimentIDs {
			args = append(args, id)
		}
	}
	all, err := s.loadRuns(ctx, where, args...)
	if err != nil {
		return nil, err
	}
	var runs []tracker.Run
	byID := map[string]LocalRun{}
	for _, r := range all {
		if f.Match(r.Run) {
			runs = append(runs, r.Run)
			byID[r.Info.ID] = r
		}
	}
	if err := tracker.SortRuns(runs, q.OrderBy); err != nil {
		return nil, err
	}
	if q.MaxResults > 0 && len(runs) > q.MaxResults {
		runs = runs[:q.MaxResults]
	}
	out := make([]LocalRun, len(runs))
	for i, r := range runs {
		out[i] = byID[r.Info.ID]
	}
	return out, nil
}

// ListArtifacts lists one directory level of a run's artifacts.
func (s *Store) ListArtifacts(ctx context.Context, runID, dir string) ([]tracker.FileInfo, error) {
	id, err := s.Resolve(ctx, runID)
	if err != nil {
		return nil, err
	}
	all, err := s.AllArtifacts(ctx, id)
	if err != nil {
		return nil, err
	}
	dir = strings.Trim(dir, "/")
	prefix := ""
	if dir != "" {
		prefix = dir + "/"
	}
	seen := map[string]bool{}
	var out []tracker.FileInfo
	for _, f := range all {
		rest, ok := strings.CutPrefix(f.Path, prefix)
		if !ok {
			continue
		}
		name, _, isDir := strings.Cut(rest, "/")
		p := prefix + name
		if seen[p] {
			continue
		}
		seen[p] = true
		fi := tracker.FileInfo{Path: p, IsDir: isDir}
		if !isDir {
			fi.Size = f.Size
		}
		out = append(out, fi)
	}
	return out, nil
}

// AllArtifacts lists every artifact file of a run (recursively).
func (s *Store) AllArtifacts(ctx context.Context, runID string) ([]tracker.FileInfo, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT path, size FROM artifacts WHERE run_id = ? ORDER BY path", runID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []tracker.FileInfo
	for rows.Next() {
		var f tracker.FileInfo
		if err := rows.Scan(&f.Path, &f.Size); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// OpenArtifact opens an artifact file.
func (s *Store) OpenArtifact(ctx context.Context, runID, rel string) (io.ReadCloser, error) {
	id, err := s.Resolve(ctx, runID)
	if err != nil {
		return nil, err
	}
	rel, err = cleanRel(rel)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(s.artifact, id, filepath.FromSlash(rel)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, tracker.Errorf(tracker.ErrNotFound, "artifact %s of run %s", rel, runID)
	}
	return f, err
}

// --- registry ---------------------------------------------------------------

// CreateRegisteredModel creates name if missing.
func (s *Store) CreateRegisteredModel(ctx context.Context, name string) error {
	if name == "" {
		return tracker.Errorf(tracker.ErrInvalid, "model name is empty")
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT OR IGNORE INTO registered_models(name, created) VALUES (?, ?)", name, s.now().UnixMilli())
		return err
	})
}

// CreateModelVersion registers the artifact; versions count up per model.
func (s *Store) CreateModelVersion(ctx context.Context, name, runID, artifactPath string) (tracker.ModelVersion, error) {
	id, err := s.Resolve(ctx, runID)
	if err != nil {
		return tracker.ModelVersion{}, err
	}
	artifactPath = strings.Trim(artifactPath, "/")
	var version int64
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var one int
		if err := tx.QueryRowContext(ctx, "SELECT 1 FROM registered_models WHERE name = ?", name).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return tracker.Errorf(tracker.ErrNotFound, "registered model %q", name)
		} else if err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE name = ?", name).Scan(&version); err != nil {
			return err
		}
		if err := touch(ctx, tx, id); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO model_versions(name, version, run_id, artifact_path, created) VALUES (?,?,?,?,?)",
			name, version, id, artifactPath, s.now().UnixMilli())
		return err
	})
	if err != nil {
		return tracker.ModelVersion{}, fmt.Errorf("creating a version of %q: %w", name, err)
	}
	return tracker.ModelVersion{Name: name, Version: strconv.FormatInt(version, 10), Source: s.runArtifactURI(id) + "/" + artifactPath, RunID: id, Status: "READY"}, nil
}

// SetAlias points alias at version.
func (s *Store) SetAlias(ctx context.Context, name, alias, version string) error {
	return s.setAlias(ctx, name, alias, version, true)
}

// SetAliasPending records an alias that MLflow has not received yet.
func (s *Store) SetAliasPending(ctx context.Context, name, alias, version string) error {
	return s.setAlias(ctx, name, alias, version, false)
}

func (s *Store) setAlias(ctx context.Context, name, alias, version string, synced bool) error {
	v, err := strconv.ParseInt(version, 10, 64)
	if err != nil || v <= 0 {
		return tracker.Errorf(tracker.ErrInvalid, "model version %q", version)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		var one int
		if err := tx.QueryRowContext(ctx, "SELECT 1 FROM model_versions WHERE name = ? AND version = ?", name, v).Scan(&one); errors.Is(err, sql.ErrNoRows) {
			return tracker.Errorf(tracker.ErrNotFound, "model version %s of %q", version, name)
		} else if err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO aliases(name, alias, version, synced) VALUES (?,?,?,?)
			ON CONFLICT(name, alias) DO UPDATE SET version = excluded.version, synced = excluded.synced`, name, alias, v, synced)
		return err
	})
}

// GetModelVersionByAlias resolves an alias.
func (s *Store) GetModelVersionByAlias(ctx context.Context, name, alias string) (tracker.ModelVersion, error) {
	var v int64
	err := s.db.QueryRowContext(ctx, "SELECT version FROM aliases WHERE name = ? AND alias = ?", name, alias).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return tracker.ModelVersion{}, tracker.Errorf(tracker.ErrNotFound, "alias %q of model %q", alias, name)
	}
	if err != nil {
		return tracker.ModelVersion{}, err
	}
	lv, err := s.modelVersions(ctx, "name = ? AND version = ?", name, v)
	if err != nil || len(lv) == 0 {
		return tracker.ModelVersion{}, tracker.Errorf(tracker.ErrNotFound, "model version %d of %q", v, name)
	}
	return lv[0].ModelVersion, nil
}

// LocalVersion is a model version with its MLflow counterpart.
type LocalVersion struct {
	tracker.ModelVersion
	ArtifactPath  string
	RemoteVersion string
}

// ModelVersionsOfRun lists the versions created from a run.
func (s *Store) ModelVersionsOfRun(ctx context.Context, runID string) ([]LocalVersion, error) {
	return s.modelVersions(ctx, "run_id = ?", runID)
}

func (s *Store) modelVersions(ctx context.Context, where string, args ...any) ([]LocalVersion, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT name, version, run_id, artifact_path, COALESCE(remote_version, ''), description, tags FROM model_versions WHERE "+where+" ORDER BY name, version", args...)
	if err != nil {
		return nil, err
	}
	var out []LocalVersion
	for rows.Next() {
		var lv LocalVersion
		var v int64
		var tags string
		if err := rows.Scan(&lv.Name, &v, &lv.RunID, &lv.ArtifactPath, &lv.RemoteVersion, &lv.Description, &tags); err != nil {
			rows.Close()
			return nil, err
		}
		if err := json.Unmarshal([]byte(tags), &lv.Tags); err != nil {
			rows.Close()
			return nil, fmt.Errorf("tags of model version %s/%d: %w", lv.Name, v, err)
		}
		if len(lv.Tags) == 0 {
			lv.Tags = nil
		}
		lv.Version = strconv.FormatInt(v, 10)
		lv.Source = s.runArtifactURI(lv.RunID) + "/" + lv.ArtifactPath
		lv.Status = "READY"
		out = append(out, lv)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		rows, err := s.db.QueryContext(ctx, "SELECT alias FROM aliases WHERE name = ? AND version = ? ORDER BY alias", out[i].Name, out[i].Version)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var a string
			rows.Scan(&a)
			out[i].Aliases = append(out[i].Aliases, a)
		}
		rows.Close()
	}
	return out, nil
}

var _ tracker.VersionAnnotator = (*Store)(nil)

// AnnotateModelVersion sets a version's description (when not empty) and
// tags (merged into its tags).
func (s *Store) AnnotateModelVersion(ctx context.Context, name, version string, a tracker.VersionAnnotation) error {
	for k := range a.Tags {
		if err := tracker.ValidateKey(k); err != nil {
			return err
		}
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		var desc, raw string
		err := tx.QueryRowContext(ctx, "SELECT description, tags FROM model_versions WHERE name = ? AND version = ?", name, version).Scan(&desc, &raw)
		if errors.Is(err, sql.ErrNoRows) {
			return tracker.Errorf(tracker.ErrNotFound, "model version %s of %q", version, name)
		} else if err != nil {
			return err
		}
		tags := map[string]string{}
		if err := json.Unmarshal([]byte(raw), &tags); err != nil {
			return err
		}
		for k, v := range a.Tags {
			tags[k] = v
		}
		if a.Description != "" {
			desc = a.Description
		}
		b, _ := json.Marshal(tags)
		_, err = tx.ExecContext(ctx, "UPDATE model_versions SET description = ?, tags = ? WHERE name = ? AND version = ?", desc, string(b), name, version)
		return err
	})
}

// SetRemoteVersion records the MLflow version of a local version.
func (s *Store) SetRemoteVersion(ctx context.Context, name, version, remote string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE model_versions SET remote_version = ? WHERE name = ? AND version = ?", remote, name, version)
		return err
	})
}

// PendingAlias is an alias MLflow has not received.
type PendingAlias struct {
	Name, Alias, Version string
}

// PendingAliases lists aliases not yet replayed.
func (s *Store) PendingAliases(ctx context.Context) ([]PendingAlias, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT name, alias, version FROM aliases WHERE synced = 0 ORDER BY name, alias")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PendingAlias
	for rows.Next() {
		var p PendingAlias
		if err := rows.Scan(&p.Name, &p.Alias, &p.Version); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// MarkAliasSynced marks an alias replayed if it still points at version.
func (s *Store) MarkAliasSynced(ctx context.Context, name, alias, version string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE aliases SET synced = 1 WHERE name = ? AND alias = ? AND version = ?", name, alias, version)
		return err
	})
}

// --- sync bookkeeping ---------------------------------------------------------

// SetRemoteID records the MLflow id of a local run.
func (s *Store) SetRemoteID(ctx context.Context, localID, remoteID string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE runs SET remote_id = ? WHERE id = ?", remoteID, localID)
		return err
	})
}

// SetRemoteIDIf records the MLflow id of a local run only if its recorded
// MLflow id is still old ("" = none); it reports whether it did, so a replay
// never replaces the id another writer recorded meanwhile.
func (s *Store) SetRemoteIDIf(ctx context.Context, localID, old, remoteID string) (bool, error) {
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE runs SET remote_id = ? WHERE id = ? AND COALESCE(remote_id, '') = ?", remoteID, localID, old)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return n == 1, err
}

// SetSyncState sets a run's sync state; from (when not empty) guards the
// transition so a concurrent writer's "unsynced" is not overwritten.
func (s *Store) SetSyncState(ctx context.Context, localID, from, to string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		q, args := "UPDATE runs SET sync_state = ? WHERE id = ?", []any{to, localID}
		if from != "" {
			q += " AND sync_state = ?"
			args = append(args, from)
		}
		_, err := tx.ExecContext(ctx, q, args...)
		return err
	})
}

// MarkSynced marks a run synced if nothing was written to it since the
// snapshot with revision rev; it reports whether it did.
func (s *Store) MarkSynced(ctx context.Context, localID string, rev int64) (bool, error) {
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE runs SET sync_state = ? WHERE id = ? AND rev = ?", StateSynced, localID, rev)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return n == 1, err
}

// RunsInState lists local run ids in a sync state, oldest first.
func (s *Store) RunsInState(ctx context.Context, state string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id FROM runs WHERE sync_state = ? ORDER BY start_time, id", state)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// LocalVersionFor finds the local version that MLflow knows as version, or
// else the local version with that number.
func (s *Store) LocalVersionFor(ctx context.Context, name, version string) (LocalVersion, error) {
	lvs, err := s.modelVersions(ctx, "name = ? AND remote_version = ?", name, version)
	if err != nil {
		return LocalVersion{}, err
	}
	if len(lvs) == 0 {
		v, perr := strconv.ParseInt(version, 10, 64)
		if perr != nil {
			return LocalVersion{}, tracker.Errorf(tracker.ErrInvalid, "model version %q", version)
		}
		if lvs, err = s.modelVersions(ctx, "name = ? AND version = ?", name, v); err != nil {
			return LocalVersion{}, err
		}
	}
	if len(lvs) == 0 {
		return LocalVersion{}, tracker.Errorf(tracker.ErrNotFound, "model version %s of %q", version, name)
	}
	return lvs[0], nil
}

// LocalVersionForLocal returns the local version numbered version.
func (s *Store) LocalVersionForLocal(ctx context.Context, name, version string) (LocalVersion, error) {
	v, err := strconv.ParseInt(version, 10, 64)
	if err != nil {
		return LocalVersion{}, tracker.Errorf(tracker.ErrInvalid, "model version %q", version)
	}
	lvs, err := s.modelVersions(ctx, "name = ? AND version = ?", name, v)
	if err != nil {
		return LocalVersion{}, err
	}
	if len(lvs) == 0 {
		return LocalVersion{}, tracker.Errorf(tracker.ErrNotFound, "model version %s of %q", version, name)
	}
	return lvs[0], nil
}
