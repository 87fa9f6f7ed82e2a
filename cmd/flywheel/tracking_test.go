package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flywheel-ml/flywheel/internal/database"
	"github.com/flywheel-ml/flywheel/internal/harness"
)

// TestTrackingStoreOnPostgres runs the commands of docs/tracking.md's
// "Tracker store on PostgreSQL" against a real PostgreSQL server: `train`
// tracks into the store --tracking-db names, a second `train` finds it
// through FLYWHEEL_DATABASE_URL alone and numbers its version after the
// first one's, and `runs list|show` read both runs back, artifacts
// included.
func TestTrackingStoreOnPostgres(t *testing.T) {
	clearTrackingEnv(t)
	pg := harness.StartPostgres(t, harness.PostgresOptions{Settings: map[string]string{"fsync": "off"}})
	url := pg.NewDatabase(t)
	models := filepath.Join(t.TempDir(), "models")

	trainCmd(t, append(trackedTrainArgs(t), "--models", models, "--tracking-db", url)...)
	v1 := filepath.Join(models, "ridership", "1")
	c1 := loadCard(t, v1)
	if c1.Training.Tracker != "postgres" || c1.Training.RunID == "" {
		t.Fatalf("card training %+v", c1.Training)
	}
	checkTrackedRun(t, sqliteRun(t, url, c1.Training.RunID), c1, v1)

	t.Setenv(database.EnvURL, url)
	trainCmd(t, append(trackedTrainArgs(t), "--models", models, "--seed", "2", "--force")...)
	c2 := loadCard(t, filepath.Join(models, "ridership", "2"))
	r2 := sqliteRun(t, url, c2.Training.RunID)
	if c2.Training.Tracker != "postgres" || len(r2.versions) != 1 || r2.versions[0].Version != "2" || r2.champion != "2" {
		t.Errorf("second run %+v: versions %+v champion %s", c2.Training, r2.versions, r2.champion)
	}

	out, err := runCLI(t, "list")
	if err != nil {
		t.Fatal(err, out)
	}
	for _, id := range []string{c1.Training.RunID, c2.Training.RunID} {
		if !strings.Contains(out, id) {
			t.Errorf("runs list misses %s:\n%s", id, out)
		}
	}
	out, err = runCLI(t, "show", c1.Training.RunID)
	if err != nil || !strings.Contains(out, "model/model.onnx") {
		t.Errorf("runs show: %v\n%s", err, out)
	}
	// The trainer's PostgreSQL --database holds its tracker store too.
	t.Setenv(database.EnvURL, "")
	tr, err := loopTracker(context.Background(), trainerFlags{track: true, database: url}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tr.kind != "postgres" {
		t.Errorf("trainer's tracker store: %s", tr.kind)
	}
	if r, err := tr.GetRun(context.Background(), c2.Training.RunID); err != nil || r.Info.Status != "FINISHED" {
		t.Errorf("the trainer's store misses train's run: %+v %v", r.Info, err)
	}
	tr.Close()
	// A SQLite URL in FLYWHEEL_DATABASE_URL is another store's file: the
	// tracker keeps its own default then.
	f := trackingFlags{}
	t.Setenv(database.EnvURL, filepath.Join(t.TempDir(), "flywheel.db"))
	if got := f.storeURL(); got != "var/tracking.db" {
		t.Errorf("store with a SQLite FLYWHEEL_DATABASE_URL: %s", got)
	}
	f.shared = url
	if got := f.storeURL(); got != url {
		t.Errorf("store with the trainer's --database: %s", got)
	}
}
