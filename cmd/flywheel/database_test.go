package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/flywheel-ml/flywheel/server/monitor"
)

// TestApplyDatabase: --database or --database-file (a mounted secret, its
// content trimmed) replaces --predlog-db; both at once is a usage error.
func TestApplyDatabase(t *testing.T) {
	file := filepath.Join(t.TempDir(), "url")
	if err := os.WriteFile(file, []byte("postgres://u:p@db:5432/flywheel\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, db, file, want string
		fails                bool
	}{
		{"neither", "", "", "var/flywheel.db", false},
		{"url", "postgres://a/b", "", "postgres://a/b", false},
		{"file", "", file, "postgres://u:p@db:5432/flywheel", false},
		{"both", "postgres://a/b", file, "", true},
		{"missing file", "", filepath.Join(t.TempDir(), "none"), "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := monitor.Config{DB: "var/flywheel.db"}
			err := applyDatabase(&c, tc.db, tc.file)
			if (err != nil) != tc.fails {
				t.Fatalf("err = %v, want failure %v", err, tc.fails)
			}
			if !tc.fails && c.DB != tc.want {
				t.Errorf("DB = %q, want %q", c.DB, tc.want)
			}
		})
	}
}
