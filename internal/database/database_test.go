package database_test

import (
	"context"
	"testing"

	"github.com/flywheel-ml/flywheel/internal/database"
	"github.com/flywheel-ml/flywheel/internal/harness"
)

func TestRebind(t *testing.T) {
	for _, tc := range []struct {
		d        database.Dialect
		in, want string
	}{
		{database.SQLite, "SELECT ? , ?", "SELECT ? , ?"},
		{database.Postgres, "SELECT ? , ?", "SELECT $1 , $2"},
		{database.Postgres, "SELECT 1", "SELECT 1"},
	} {
		d := &database.DB{Dialect: tc.d}
		if got := d.Rebind(tc.in); got != tc.want {
			t.Errorf("%s Rebind(%q) = %q, want %q", tc.d, tc.in, got, tc.want)
		}
	}
}

func TestURL(t *testing.T) {
	for _, tc := range []struct {
		url, path, redacted string
		pg                  bool
	}{
		{"var/flywheel.db", "var/flywheel.db", "var/flywheel.db", false},
		{"sqlite:/tmp/x.db", "/tmp/x.db", "sqlite:/tmp/x.db", false},
		{"postgres://u:secret@h:5432/db", "", "postgres://u:xxxxx@h:5432/db", true},
		{"postgresql://h/db", "", "postgresql://h/db", true},
	} {
		if got := database.IsPostgres(tc.url); got != tc.pg {
			t.Errorf("IsPostgres(%q) = %v", tc.url, got)
		}
		if got := database.SQLitePath(tc.url); got != tc.path {
			t.Errorf("SQLitePath(%q) = %q, want %q", tc.url, got, tc.path)
		}
		if got := database.Redact(tc.url); got != tc.redacted {
			t.Errorf("Redact(%q) = %q, want %q", tc.url, got, tc.redacted)
		}
	}
}

// TestMigrateContract: both backends apply each migration once, keep
// components apart, and refuse a schema newer than the binary.
func TestMigrateContract(t *testing.T) {
	for _, b := range harness.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			url := b.NewURL(t)
			db, err := database.Open(ctx, url, database.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			m := database.Migrations{
				database.SQLite:   {`CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)`, `ALTER TABLE a ADD COLUMN w TEXT`},
				database.Postgres: {`CREATE TABLE a (id BIGSERIAL PRIMARY KEY, v TEXT)`, `ALTER TABLE a ADD COLUMN w TEXT`},
			}
			for i := 0; i < 2; i++ { // the second run applies nothing
				if err := db.Migrate(ctx, "a", m); err != nil {
					t.Fatalf("run %d: %v", i, err)
				}
			}
			if v, err := db.SchemaVersion(ctx, "a"); err != nil || v != 2 {
				t.Fatalf("schema version = %d, %v; want 2", v, err)
			}
			if _, err := db.ExecContext(ctx, `INSERT INTO a (v, w) VALUES (?, ?)`, "x", "y"); err != nil {
				t.Fatal(err)
			}
			var w string
			if err := db.QueryRowContext(ctx, `SELECT w FROM a WHERE v = ?`, "x").Scan(&w); err != nil || w != "y" {
				t.Fatalf("w = %q, %v", w, err)
			}
			older := database.Migrations{database.SQLite: m[database.SQLite][:1], database.Postgres: m[database.Postgres][:1]}
			if err := db.Migrate(ctx, "a", older); err == nil {
				t.Fatal("a binary with fewer migrations than the database should refuse it")
			}
			if db.Dialect == database.Postgres {
				// Another component in the same database starts at 0.
				if v, err := db.SchemaVersion(ctx, "b"); err != nil || v != 0 {
					t.Fatalf("component b version = %d, %v", v, err)
				}
			}
		})
	}
}
