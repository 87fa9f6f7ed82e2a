package localstore_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/mattn/go-sqlite3"

	"github.com/flywheel-ml/flywheel/internal/database"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/localstore"
)

// legacySchema is tracking.db's schema as the store made it before its
// migrations moved to database.Migrate (counted by PRAGMA user_version 4).
const legacySchema = `
CREATE TABLE experiments (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, created INTEGER NOT NULL);
CREATE TABLE runs (
	id TEXT PRIMARY KEY, experiment_id INTEGER NOT NULL REFERENCES experiments(id), name TEXT NOT NULL,
	status TEXT NOT NULL, start_time INTEGER NOT NULL, end_time INTEGER NOT NULL DEFAULT 0,
	remote_id TEXT, sync_state TEXT NOT NULL DEFAULT 'local');
CREATE INDEX runs_experiment ON runs(experiment_id, start_time);
CREATE UNIQUE INDEX runs_remote ON runs(remote_id) WHERE remote_id IS NOT NULL;
CREATE TABLE params (run_id TEXT NOT NULL REFERENCES runs(id), key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (run_id, key));
CREATE TABLE tags (run_id TEXT NOT NULL REFERENCES runs(id), key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (run_id, key));
CREATE TABLE metrics (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs(id), key TEXT NOT NULL,
	value REAL, is_nan INTEGER NOT NULL DEFAULT 0, timestamp INTEGER NOT NULL, step INTEGER NOT NULL);
CREATE INDEX metrics_run_key ON metrics(run_id, key);
CREATE TABLE datasets (run_id TEXT NOT NULL REFERENCES runs(id), name TEXT NOT NULL, digest TEXT NOT NULL, source_type TEXT NOT NULL,
	source TEXT NOT NULL, schema TEXT NOT NULL DEFAULT '', profile TEXT NOT NULL DEFAULT '', context TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (run_id, name, digest, context));
CREATE TABLE artifacts (run_id TEXT NOT NULL REFERENCES runs(id), path TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (run_id, path));
CREATE TABLE registered_models (name TEXT PRIMARY KEY, created INTEGER NOT NULL);
CREATE TABLE model_versions (name TEXT NOT NULL REFERENCES registered_models(name), version INTEGER NOT NULL,
	run_id TEXT NOT NULL REFERENCES runs(id), artifact_path TEXT NOT NULL, created INTEGER NOT NULL, remote_version TEXT,
	PRIMARY KEY (name, version));
CREATE TABLE aliases (name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL, synced INTEGER NOT NULL DEFAULT 1,
	PRIMARY KEY (name, alias), FOREIGN KEY (name, version) REFERENCES model_versions(name, version));
ALTER TABLE runs ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
ALTER TABLE model_versions ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE model_versions ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
PRAGMA user_version = 4;

INSERT INTO experiments VALUES (1, 'ridership', 1700000000000);
INSERT INTO runs VALUES ('r-synced', 1, 'synced', 'FINISHED', 1700000001000, 1700000002000, 'mlflow-1', 'synced', 7);
INSERT INTO runs VALUES ('r-unsynced', 1, 'unsynced', 'FINISHED', 1700000003000, 1700000004000, 'mlflow-2', 'unsynced', 5);
INSERT INTO runs VALUES ('r-down', 1, 'down', 'RUNNING', 1700000005000, 0, NULL, 'unsynced', 2);
INSERT INTO runs VALUES ('r-local', 1, 'local', 'FINISHED', 1700000006000, 1700000007000, NULL, 'local', 3);
INSERT INTO runs VALUES ('r-mirrored', 1, 'mirrored', 'RUNNING', 1700000008000, 0, 'mlflow-3', 'mirrored', 1);
INSERT INTO params VALUES ('r-synced', 'algorithm', 'gbdt');
INSERT INTO tags VALUES ('r-synced', 'mlflow.runName', 'synced');
INSERT INTO metrics (run_id, key, value, is_nan, timestamp, step) VALUES ('r-synced', 'mae', 1.5, 0, 1, 0), ('r-synced', 'mae', NULL, 1, 2, 1);
INSERT INTO datasets VALUES ('r-synced', 'chicago', 'abcd1234', 'local', '{"uri":"x"}', '', '{"num_rows":3}', 'training');
INSERT INTO artifacts VALUES ('r-synced', 'model/model.onnx', 4, 'ff');
INSERT INTO registered_models VALUES ('ridership', 1700000000000);
INSERT INTO model_versions VALUES ('ridership', 1, 'r-synced', 'model', 1700000002000, '11', 'v1', '{"algorithm":"gbdt"}');
INSERT INTO model_versions VALUES ('ridership', 2, 'r-unsynced', 'model', 1700000004000, NULL, '', '{}');
INSERT INTO aliases VALUES ('ridership', 'champion', 2, 0);
INSERT INTO aliases VALUES ('ridership', 'previous', 1, 1);
`

// TestLegacyTrackingDB opens a tracking.db made by the old schema: its runs,
// metrics, registry and sync state are kept (the sync state now in the
// outbox), the migration history moves to schema_migrations, and an old
// binary would refuse the file instead of writing to dropped columns.
func TestLegacyTrackingDB(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tracking.db")
	raw, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(legacySchema); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	for open := 0; open < 2; open++ {
		s, err := localstore.Open(ctx, localstore.Options{Config: localstore.Config{URL: path}})
		if err != nil {
			t.Fatalf("open %d: %v", open, err)
		}
		o := s.Outbox()
		r, err := s.GetRun(ctx, "r-synced")
		if err != nil {
			t.Fatal(err)
		}
		if r.Params["algorithm"] != "gbdt" || r.Tags[tracker.TagRunName] != "synced" || r.Info.EndTime != 1700000002000 ||
			len(r.Datasets) != 1 || r.Datasets[0].Profile != `{"num_rows":3}` || r.Metrics["mae"].Step != 1 {
			t.Errorf("run %+v", r)
		}
		if h, _ := s.MetricHistory(ctx, "r-synced", "mae"); len(h) != 2 || h[0].Value != 1.5 {
			t.Errorf("history %v", h)
		}
		if all, _ := s.SearchRuns(ctx, tracker.SearchQuery{}); len(all) != 5 {
			t.Errorf("%d runs, want 5", len(all))
		}
		for id, want := range map[string]localstore.OutboxRun{
			"r-synced":   {RemoteID: "mlflow-1", State: localstore.StateSynced},
			"r-unsynced": {RemoteID: "mlflow-2", State: localstore.StateUnsynced},
			"r-down":     {State: localstore.StateUnsynced},
			"r-local":    {State: localstore.StateLocal},
			"r-mirrored": {RemoteID: "mlflow-3", State: localstore.StateMirrored},
		} {
			got, err := o.Run(ctx, id)
			if err != nil || got.RemoteID != want.RemoteID || got.State != want.State {
				t.Errorf("%s: outbox %+v %v, want %+v", id, got, err, want)
			}
		}
		if got, err := o.Resolve(ctx, "mlflow-2"); err != nil || got != "r-unsynced" {
			t.Errorf("Resolve(mlflow-2) = %q %v", got, err)
		}
		if rv, _ := o.RemoteVersion(ctx, "ridership", "1"); rv != "11" {
			t.Errorf("MLflow's number of version 1: %q", rv)
		}
		if p, _ := o.PendingAliases(ctx); len(p) != 1 || p[0] != (localstore.PendingAlias{Name: "ridership", Alias: "champion", Version: "2"}) {
			t.Errorf("pending aliases %v", p)
		}
		if mv, err := s.GetModelVersionByAlias(ctx, "ridership", "previous"); err != nil || mv.Description != "v1" || mv.Tags["algorithm"] != "gbdt" {
			t.Errorf("previous → %+v %v", mv, err)
		}
		// The migrated file takes new writes; the synced run written again
		// is unsynced.
		if err := s.LogBatch(ctx, "r-synced", nil, nil, []tracker.Tag{{Key: "late", Value: "1"}}); err != nil {
			t.Fatal(err)
		}
		if ob, _ := o.Run(ctx, "r-synced"); ob.State != localstore.StateUnsynced {
			t.Errorf("synced run written after the migration: %s", ob.State)
		}
		if _, err := o.MarkSynced(ctx, "r-synced", mustRev(t, s, "r-synced")); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}

	raw, err = sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var uv, versions, max int
	raw.QueryRow("PRAGMA user_version").Scan(&uv)
	raw.QueryRow("SELECT COUNT(*), MAX(version) FROM schema_migrations").Scan(&versions, &max)
	if n := localstore.SchemaVersion(database.SQLite); uv != n || versions != n || max != n {
		t.Errorf("user_version %d, schema_migrations %d rows up to %d; want %d each", uv, versions, max, n)
	}
	var cols string
	raw.QueryRow("SELECT group_concat(name) FROM pragma_table_info('runs')").Scan(&cols)
	if strings.Contains(cols, "sync_state") || strings.Contains(cols, "remote_id") {
		t.Errorf("runs still holds the sync bookkeeping: %s", cols)
	}

	// A file whose user_version is newer than the old scheme knew, with no
	// schema_migrations, is refused.
	other := filepath.Join(t.TempDir(), "future.db")
	fut, _ := sql.Open("sqlite3", "file:"+other)
	if _, err := fut.Exec("PRAGMA user_version = 9"); err != nil {
		t.Fatal(err)
	}
	fut.Close()
	if s, err := localstore.Open(ctx, localstore.Options{Config: localstore.Config{URL: other}}); err == nil || !strings.Contains(err.Error(), "newer") {
		if s != nil {
			s.Close()
		}
		t.Errorf("opening a newer schema: %v", err)
	}
}

func mustRev(t *testing.T, s *localstore.Store, id string) int64 {
	t.Helper()
	lr, err := s.GetLocalRun(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return lr.Rev
}
