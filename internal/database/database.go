// Package database opens the SQL database that a store lives in, chosen by
// a URL: a PostgreSQL server (postgres://… or postgresql://…, through pgx)
// shared by every replica, or an embedded SQLite file (a path, or
// sqlite:path). Stores write their queries with ? placeholders; DB and Tx
// rewrite them to $1, $2, … for PostgreSQL. Migrate applies a store's
// schema migrations for the dialect, each once.
package database

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "github.com/mattn/go-sqlite3"    // registers the "sqlite3" driver
)

// EnvURL is the environment variable of the shared database URL
// (`--database` wins over it).
const EnvURL = "FLYWHEEL_DATABASE_URL"

// Dialect is the SQL dialect of a database.
type Dialect string

// Dialects.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is an open database; its Exec/Query/Prepare methods take ? placeholders.
type DB struct {
	*sql.DB
	Dialect Dialect
	// Name is the URL without its password (for logs), or the SQLite path.
	Name string
}

// Options tune Open.
type Options struct {
	// SQLite connection parameters (go-sqlite3's _journal_mode, _synchronous,
	// _busy_timeout, _txlock, …) added to the file URI.
	SQLite url.Values
	// MaxOpenConns bounds the connection pool (0: database/sql's default for
	// SQLite, 8 for PostgreSQL).
	MaxOpenConns int
}

// IsPostgres reports whether u names a PostgreSQL database.
func IsPostgres(u string) bool {
	return strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://")
}

// SQLitePath returns the file of a SQLite URL (a path or sqlite:path), or
// "" for a PostgreSQL URL.
func SQLitePath(u string) string {
	if IsPostgres(u) {
		return ""
	}
	return strings.TrimPrefix(u, "sqlite:")
}

// Redact returns u without its password.
func Redact(u string) string {
	if !IsPostgres(u) {
		return u
	}
	p, err := url.Parse(u)
	if err != nil {
		return "postgres://<unparsable URL>"
	}
	return p.Redacted()
}

// Open opens the database u names and checks that it answers.
func Open(ctx context.Context, u string, o Options) (*DB, error) {
	if u == "" {
		return nil, errors.New("database: empty URL")
	}
	if IsPostgres(u) {
		db, err := sql.Open("pgx", u)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", Redact(u), err)
		}
		n := o.MaxOpenConns
		if n <= 0 {
			n = 8
		}
		db.SetMaxOpenConns(n)
		db.SetMaxIdleConns(n)
		db.SetConnMaxIdleTime(5 * time.Minute)
		d := &DB{DB: db, Dialect: Postgres, Name: Redact(u)}
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			return nil, fmt.Errorf("connecting to %s: %w", d.Name, err)
		}
		return d, nil
	}
	path := SQLitePath(u)
	q := o.SQLite
	dsn := "file:" + path
	if len(q) > 0 {
		dsn += "?" + q.Encode()
	}
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if o.MaxOpenConns > 0 {
		db.SetMaxOpenConns(o.MaxOpenConns)
	}
	return &DB{DB: db, Dialect: SQLite, Name: path}, nil
}

// Rebind rewrites ? placeholders to $n for PostgreSQL. Queries must not
// hold a literal ? (none of Flywheel's do).
func (d *DB) Rebind(q string) string { return rebind(d.Dialect, q) }

func rebind(d Dialect, q string) string {
	if d != Postgres || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// ExecContext runs q with ? placeholders.
func (d *DB) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return d.DB.ExecContext(ctx, d.Rebind(q), args...)
}

// QueryContext runs q with ? placeholders.
func (d *DB) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return d.DB.QueryContext(ctx, d.Rebind(q), args...)
}

// QueryRowContext runs q with ? placeholders.
func (d *DB) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return d.DB.QueryRowContext(ctx, d.Rebind(q), args...)
}

// Exec runs q with ? placeholders.
func (d *DB) Exec(q string, args ...any) (sql.Result, error) {
	return d.ExecContext(context.Background(), q, args...)
}

// Query runs q with ? placeholders.
func (d *DB) Query(q string, args ...any) (*sql.Rows, error) {
	return d.QueryContext(context.Background(), q, args...)
}

// QueryRow runs q with ? placeholders.
func (d *DB) QueryRow(q string, args ...any) *sql.Row {
	return d.QueryRowContext(context.Background(), q, args...)
}

// PrepareContext prepares q with ? placeholders.
func (d *DB) PrepareContext(ctx context.Context, q string) (*sql.Stmt, error) {
	return d.DB.PrepareContext(ctx, d.Rebind(q))
}

// BeginTx starts a transaction whose statements take ? placeholders.
func (d *DB) BeginTx(ctx context.Context, opts *sql.TxOptions) (*Tx, error) {
	tx, err := d.DB.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &Tx{Tx: tx, Dialect: d.Dialect}, nil
}

// InTx runs fn in a transaction, committed when fn returns nil.
func (d *DB) InTx(ctx context.Context, fn func(*Tx) error) error {
	tx, err := d.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// Tx is a transaction whose statements take ? placeholders.
type Tx struct {
	*sql.Tx
	Dialect Dialect
}

// ExecContext runs q with ? placeholders.
func (t *Tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.Tx.ExecContext(ctx, rebind(t.Dialect, q), args...)
}

// QueryContext runs q with ? placeholders.
func (t *Tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.Tx.QueryContext(ctx, rebind(t.Dialect, q), args...)
}

// QueryRowContext runs q with ? placeholders.
func (t *Tx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.Tx.QueryRowContext(ctx, rebind(t.Dialect, q), args...)
}

// PrepareContext prepares q with ? placeholders.
func (t *Tx) PrepareContext(ctx context.Context, q string) (*sql.Stmt, error) {
	return t.Tx.PrepareContext(ctx, rebind(t.Dialect, q))
}

// Migrations are a store's schema changes per dialect, applied in order,
// each once. Append, never edit.
type Migrations map[Dialect][]string

// Migrate applies the pending migrations of component. SQLite files keep
// the table schema_migrations(version, applied_at) of one store; in a
// shared PostgreSQL database schema_migrations is keyed by component too,
// and replicas starting together take turns under an advisory lock.
func (d *DB) Migrate(ctx context.Context, component string, m Migrations) error {
	list := m[d.Dialect]
	if len(list) == 0 {
		return fmt.Errorf("%s: no migrations for %s", component, d.Dialect)
	}
	switch d.Dialect {
	case Postgres:
		return d.InTx(ctx, func(tx *Tx) error {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7346281)`); err != nil {
				return fmt.Errorf("%s migrations lock: %w", component, err)
			}
			if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
				component TEXT NOT NULL, version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
				PRIMARY KEY (component, version))`); err != nil {
				return fmt.Errorf("%s: creating schema_migrations: %w", component, err)
			}
			var have int
			if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations WHERE component = ?`, component).Scan(&have); err != nil {
				return fmt.Errorf("%s: reading schema version: %w", component, err)
			}
			if have > len(list) {
				return fmt.Errorf("%s: database schema version %d is newer than this binary's %d", component, have, len(list))
			}
			for v := have + 1; v <= len(list); v++ {
				if _, err := tx.ExecContext(ctx, list[v-1]); err != nil {
					return fmt.Errorf("%s migration %d: %w", component, v, err)
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (component, version) VALUES (?, ?)`, component, v); err != nil {
					return fmt.Errorf("%s migration %d: %w", component, v, err)
				}
			}
			return nil
		})
	default:
		if _, err := d.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`); err != nil {
			return fmt.Errorf("%s: creating schema_migrations: %w", component, err)
		}
		have, err := d.SchemaVersion(ctx, component)
		if err != nil {
			return err
		}
		if have > len(list) {
			return fmt.Errorf("%s: database schema version %d is newer than this binary's %d", component, have, len(list))
		}
		for v := have + 1; v <= len(list); v++ {
			err := d.InTx(ctx, func(tx *Tx) error {
				// Another process opening the same file may have applied it
				// meanwhile (a write transaction on a file opened with
				// _txlock=immediate holds the lock from its start).
				var cur int
				if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
					return err
				}
				if cur >= v {
					return nil
				}
				if _, err := tx.ExecContext(ctx, list[v-1]); err != nil {
					return err
				}
				_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
					v, time.Now().UTC().Format(time.RFC3339))
				return err
			})
			if err != nil {
				return fmt.Errorf("%s migration %d: %w", component, v, err)
			}
		}
		return nil
	}
}

// SchemaVersion returns the applied schema version of component.
func (d *DB) SchemaVersion(ctx context.Context, component string) (int, error) {
	q := `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`
	var args []any
	if d.Dialect == Postgres {
		q += ` WHERE component = ?`
		args = append(args, component)
	}
	var v int
	if err := d.QueryRowContext(ctx, q, args...).Scan(&v); err != nil {
		return 0, fmt.Errorf("%s: reading schema version: %w", component, err)
	}
	return v, nil
}
