package localstore

import (
	"context"
	"fmt"
	"time"

	"github.com/flywheel-ml/flywheel/internal/database"
)

// component names the store's migrations in schema_migrations.
const component = "tracker"

// migrations are the store's schema per dialect (append, never edit). The
// first four SQLite ones are the schema that PRAGMA user_version counted
// before the store moved to database.Migrate (see adoptUserVersion); the
// fifth moves the sync bookkeeping out of the tracking tables into the
// outbox tables. PostgreSQL starts from the result, with artifact contents
// in the artifacts table (every process sharing the database reads them).
var migrations = database.Migrations{
	database.SQLite: {
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
		`ALTER TABLE runs ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;`,
		`ALTER TABLE model_versions ADD COLUMN description TEXT NOT NULL DEFAULT '';
		ALTER TABLE model_versions ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';`,
		// The outbox: a synced run's synced_rev is its rev then (a write
		// made a synced run unsynced before, so the two were equal).
		outboxDDL(database.SQLite) + `
		INSERT INTO outbox_runs (run_id, remote_id, state, synced_rev)
			SELECT id, remote_id, sync_state, rev FROM runs WHERE sync_state <> 'local' OR remote_id IS NOT NULL;
		INSERT INTO outbox_versions (name, version, remote_version)
			SELECT name, version, remote_version FROM model_versions WHERE remote_version IS NOT NULL;
		INSERT INTO outbox_aliases (name, alias, version) SELECT name, alias, version FROM aliases WHERE synced = 0;
		DROP INDEX runs_remote;
		ALTER TABLE runs DROP COLUMN remote_id;
		ALTER TABLE runs DROP COLUMN sync_state;
		ALTER TABLE model_versions DROP COLUMN remote_version;
		ALTER TABLE aliases DROP COLUMN synced;`,
		// One sync at a time per run (Outbox.Claim).
		`ALTER TABLE outbox_runs ADD COLUMN sync_owner TEXT;
		ALTER TABLE outbox_runs ADD COLUMN sync_until INTEGER NOT NULL DEFAULT 0;`,
	},
	database.Postgres: {
		`CREATE TABLE experiments (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, created BIGINT NOT NULL);
		CREATE TABLE runs (
			id TEXT PRIMARY KEY,
			experiment_id BIGINT NOT NULL REFERENCES experiments(id),
			name TEXT NOT NULL,
			status TEXT NOT NULL,
			start_time BIGINT NOT NULL,
			end_time BIGINT NOT NULL DEFAULT 0,
			rev BIGINT NOT NULL DEFAULT 0
		);
		CREATE INDEX runs_experiment ON runs(experiment_id, start_time);
		CREATE TABLE params (run_id TEXT NOT NULL REFERENCES runs(id), key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (run_id, key));
		CREATE TABLE tags (run_id TEXT NOT NULL REFERENCES runs(id), key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (run_id, key));
		CREATE TABLE metrics (
			seq BIGSERIAL PRIMARY KEY,
			run_id TEXT NOT NULL REFERENCES runs(id),
			key TEXT NOT NULL,
			value DOUBLE PRECISION,
			is_nan INTEGER NOT NULL DEFAULT 0,
			timestamp BIGINT NOT NULL,
			step BIGINT NOT NULL
		);
		CREATE INDEX metrics_run_key ON metrics(run_id, key);
		CREATE TABLE datasets (
			seq BIGSERIAL,
			run_id TEXT NOT NULL REFERENCES runs(id),
			name TEXT NOT NULL, digest TEXT NOT NULL, source_type TEXT NOT NULL, source TEXT NOT NULL,
			schema TEXT NOT NULL DEFAULT '', profile TEXT NOT NULL DEFAULT '', context TEXT NOT NULL DEFAULT '',
			PRIMARY KEY (run_id, name, digest, context)
		);
		CREATE TABLE artifacts (
			run_id TEXT NOT NULL REFERENCES runs(id), path TEXT NOT NULL, size BIGINT NOT NULL, sha256 TEXT NOT NULL,
			content BYTEA NOT NULL,
			PRIMARY KEY (run_id, path)
		);
		CREATE TABLE registered_models (name TEXT PRIMARY KEY, created BIGINT NOT NULL);
		CREATE TABLE model_versions (
			name TEXT NOT NULL REFERENCES registered_models(name),
			version BIGINT NOT NULL,
			run_id TEXT NOT NULL REFERENCES runs(id),
			artifact_path TEXT NOT NULL,
			created BIGINT NOT NULL,
			description TEXT NOT NULL DEFAULT '',
			tags TEXT NOT NULL DEFAULT '{}',
			PRIMARY KEY (name, version)
		);
		CREATE TABLE aliases (
			name TEXT NOT NULL, alias TEXT NOT NULL, version BIGINT NOT NULL,
			PRIMARY KEY (name, alias),
			FOREIGN KEY (name, version) REFERENCES model_versions(name, version)
		);` + outboxDDL(database.Postgres),
		`ALTER TABLE outbox_runs ADD COLUMN sync_owner TEXT;
		ALTER TABLE outbox_runs ADD COLUMN sync_until BIGINT NOT NULL DEFAULT 0;`,
	},
}

// outboxDDL creates the outbox tables (see Outbox).
func outboxDDL(d database.Dialect) string {
	integer := "INTEGER"
	if d == database.Postgres {
		integer = "BIGINT"
	}
	return `
		CREATE TABLE outbox_runs (
			run_id TEXT PRIMARY KEY REFERENCES runs(id),
			remote_id TEXT UNIQUE,
			state TEXT NOT NULL,
			synced_rev ` + integer + ` NOT NULL DEFAULT 0,
			since ` + integer + ` NOT NULL DEFAULT 0
		);
		CREATE TABLE outbox_versions (
			name TEXT NOT NULL, version ` + integer + ` NOT NULL, remote_version TEXT NOT NULL,
			PRIMARY KEY (name, version),
			FOREIGN KEY (name, version) REFERENCES model_versions(name, version)
		);
		CREATE TABLE outbox_aliases (name TEXT NOT NULL, alias TEXT NOT NULL, version ` + integer + ` NOT NULL, PRIMARY KEY (name, alias));`
}

// SchemaVersion is the number of migrations this build applies to a
// database of dialect d.
func SchemaVersion(d database.Dialect) int { return len(migrations[d]) }

// legacyVersions is the number of migrations the PRAGMA user_version
// scheme knew; they are the first ones of the SQLite list, unchanged.
const legacyVersions = 4

func (s *Store) migrate(ctx context.Context) error {
	if s.db.Dialect == database.SQLite {
		if err := s.adoptUserVersion(ctx); err != nil {
			return err
		}
	}
	if err := s.db.Migrate(ctx, component, migrations); err != nil {
		return err
	}
	if s.db.Dialect == database.SQLite {
		// An older binary reads user_version and refuses a schema newer
		// than its own instead of writing to tables it does not know.
		_, err := s.db.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations[database.SQLite])))
		return err
	}
	return nil
}

// adoptUserVersion bridges a tracking.db made before the store used
// database.Migrate: its PRAGMA user_version counted the migrations applied,
// which are the first ones of the list, so they are recorded in
// schema_migrations and Migrate applies only the newer ones.
func (s *Store) adoptUserVersion(ctx context.Context) error {
	return s.tx(ctx, func(tx *database.Tx) error {
		var uv int
		if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&uv); err != nil {
			return err
		}
		if uv == 0 {
			return nil
		}
		var adopted int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").Scan(&adopted); err != nil {
			return err
		}
		if adopted > 0 {
			return nil
		}
		if uv > legacyVersions {
			return fmt.Errorf("database schema version %d is newer than this build (%d)", uv, legacyVersions)
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`); err != nil {
			return err
		}
		now := time.Now().UTC().Format(time.RFC3339)
		for v := 1; v <= uv; v++ {
			if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", v, now); err != nil {
				return err
			}
		}
		s.log.Info("adopted the schema version of PRAGMA user_version", "version", uv)
		return nil
	})
}
