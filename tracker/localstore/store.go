// Package localstore is the tracker's own store: experiments, runs, params,
// metrics, tags, dataset inputs, artifacts and the model registry, in an
// embedded SQLite file (the default) or in a PostgreSQL database chosen by
// a URL (internal/database), with artifact files in a directory. Several
// processes may log to one store at once.
//
// The Outbox (outbox.go) is the other concept kept in the same database:
// which runs, model versions and aliases still have to reach MLflow
// (tracker/fallback's state).
package localstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/flywheel-ml/flywheel/internal/database"
	"github.com/flywheel-ml/flywheel/tracker"
)

// Config configures the store.
type Config struct {
	// URL is a SQLite file (a path or sqlite:path) or a PostgreSQL URL
	// (postgres://user:password@host:5432/db).
	URL string `yaml:"url"`
	// ArtifactDir holds a SQLite store's artifact files (default:
	// <name>-artifacts beside the file). A PostgreSQL store keeps them in
	// the database, readable by every process that shares it.
	ArtifactDir string        `yaml:"artifact_dir"`
	BusyTimeout time.Duration `yaml:"busy_timeout"` // SQLite only
}

// DefaultConfig uses var/tracking.db and a 30s busy timeout.
func DefaultConfig() Config {
	return Config{URL: "var/tracking.db", BusyTimeout: 30 * time.Second}
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.URL == "" {
		return errors.New("url: the database (a SQLite file or a postgres:// URL) must be set")
	}
	if c.BusyTimeout < 0 {
		return fmt.Errorf("busy_timeout %s: must not be negative", c.BusyTimeout)
	}
	return nil
}

// ArtifactRoot is the artifact directory of a SQLite store ("" for
// PostgreSQL).
func (c Config) ArtifactRoot() string {
	path := database.SQLitePath(c.URL)
	if path == "" {
		return ""
	}
	if c.ArtifactDir != "" {
		return c.ArtifactDir
	}
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	return filepath.Join(filepath.Dir(path), base+"-artifacts")
}

// Options builds a Store.
type Options struct {
	Config Config
	Logger *slog.Logger
}

// Store is a tracker.Tracker over SQLite or PostgreSQL.
type Store struct {
	db       *database.DB
	cfg      Config
	artifact string // SQLite's artifact directory; "" with PostgreSQL
	log      *slog.Logger
	now      func() time.Time
}

var _ tracker.Tracker = (*Store)(nil)

// Open opens (creating if needed) the database and migrates it.
func Open(ctx context.Context, opts Options) (*Store, error) {
	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tracker store config: %w", err)
	}
	art := cfg.ArtifactRoot()
	if path := database.SQLitePath(cfg.URL); path != "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
		}
		if err := os.MkdirAll(art, 0o755); err != nil {
			return nil, fmt.Errorf("creating artifact dir %s: %w", art, err)
		}
		if abs, err := filepath.Abs(art); err == nil {
			art = abs
		}
	}
	busy := cfg.BusyTimeout
	if busy == 0 {
		busy = 30 * time.Second
	}
	db, err := database.Open(ctx, cfg.URL, database.Options{MaxOpenConns: 4, SQLite: url.Values{
		"_journal_mode": {"WAL"}, "_busy_timeout": {strconv.FormatInt(busy.Milliseconds(), 10)}, "_txlock": {"immediate"},
		"_foreign_keys": {"on"}, "_synchronous": {"NORMAL"},
	}})
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{db: db, cfg: cfg, artifact: art, log: log.With("component", "tracker/localstore"), now: time.Now}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrating %s: %w", db.Name, err)
	}
	return s, nil
}

// tx runs fn in a transaction (immediate on SQLite), retrying when SQLite
// reports the database busy beyond the busy timeout's first wait or
// PostgreSQL a serialization failure or deadlock.
func (s *Store) tx(ctx context.Context, fn func(*database.Tx) error) error {
	for attempt := 0; ; attempt++ {
		err := s.db.InTx(ctx, fn)
		if err != nil && retryable(err) && attempt < 5 {
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

func retryable(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40001" || pe.Code == "40P01"
	}
	return false
}

// forUpdate locks the rows a SELECT reads until the transaction ends
// (PostgreSQL; a SQLite write transaction already excludes other writers).
func (s *Store) forUpdate() string {
	if s.db.Dialect == database.Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// queryAll runs q and turns each row into a T with row, which is handed
// the row's Scan; the rows are closed when it returns.
func queryAll[T any](ctx context.Context, db *database.DB, q string, args []any, row func(scan func(...any) error) (T, error)) ([]T, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := row(rows.Scan)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Name is the SQLite file or the PostgreSQL URL without its password.
func (s *Store) Name() string { return s.db.Name }

// Dialect is the database's SQL dialect.
func (s *Store) Dialect() database.Dialect { return s.db.Dialect }

// Outbox is the fallback's sync state kept in this store's database.
func (s *Store) Outbox() *Outbox { return &Outbox{s: s} }

// parseID parses an integer key (experiment id, version number) given as a
// string; a malformed one is ErrNotFound/ErrInvalid per kind.
func parseID(kind error, what, v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, tracker.Errorf(kind, "%s %q", what, v)
	}
	return n, nil
}
