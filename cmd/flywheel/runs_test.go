package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/database"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/localstore"
)

func clearTrackingEnv(t *testing.T) {
	for _, k := range []string{"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "FLYWHEEL_TRACKING_DB", database.EnvURL} {
		t.Setenv(k, "")
	}
}

func logRun(t *testing.T, tr tracker.Tracker, name, lr string, mae float64) string {
	t.Helper()
	ctx := context.Background()
	run, err := tracker.Start(ctx, tr, "ridership", tracker.RunOptions{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	for step := int64(0); step < 3; step++ {
		if err := run.Iteration(ctx, tracker.Iteration{Step: step, Metrics: map[string]float64{"valid_rmse": 2 - float64(step)/2}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := run.Finish(ctx, tracker.Result{
		Params:    map[string]string{"algorithm": "gbdt", "learning_rate": lr, "seed": "1"},
		Metrics:   map[string]float64{"test_mae": mae},
		FinalStep: 2,
	}); err != nil {
		t.Fatal(err)
	}
	return run.ID()
}

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := runRuns(context.Background(), args, &out, &errb)
	return out.String() + errb.String(), err
}

func TestRunsSQLite(t *testing.T) {
	clearTrackingEnv(t)
	db := filepath.Join(t.TempDir(), "tracking.db")
	s, err := localstore.Open(context.Background(), localstore.Options{Config: localstore.Config{URL: db}})
	if err != nil {
		t.Fatal(err)
	}
	a := logRun(t, s, "train-a", "0.1", 1.25)
	b := logRun(t, s, "train-b", "0.05", 1.5)
	s.Close()

	out, err := runCLI(t, "compare", "--tracking-db", db, a, b)
	if err != nil {
		t.Fatal(err, out)
	}
	t.Logf("compare:\n%s", out)
	for _, want := range []string{"train-a", "train-b", a, b, "* learning_rate", "0.05", "  algorithm ", "* test_mae", "1.25", "  valid_rmse "} {
		if !strings.Contains(out, want) {
			t.Errorf("compare output lacks %q", want)
		}
	}
	if strings.Contains(out, "* algorithm") || strings.Contains(out, "* valid_rmse") {
		t.Errorf("equal rows marked as different:\n%s", out)
	}

	out, err = runCLI(t, "list", "--tracking-db", db, "--filter", "metrics.test_mae < 1.4")
	if err != nil || !strings.Contains(out, "train-a") || strings.Contains(out, "train-b") || !strings.Contains(out, "local") {
		t.Errorf("list --filter: %v\n%s", err, out)
	}
	out, err = runCLI(t, "list", "--tracking-db", db, "--experiment", "ridership")
	if err != nil || !strings.Contains(out, "train-a") || !strings.Contains(out, "train-b") {
		t.Errorf("list --experiment: %v\n%s", err, out)
	}
	out, err = runCLI(t, "show", "--tracking-db", db, a)
	if err != nil || !strings.Contains(out, "learning_rate") || !strings.Contains(out, "test_mae") || !strings.Contains(out, "FINISHED") {
		t.Errorf("show: %v\n%s", err, out)
	}
	for _, bad := range [][]string{{"compare", "--tracking-db", db, a}, {"show"}, {"nope"}, {"sync", "--tracking-db", db}} {
		if _, err := runCLI(t, bad...); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

func TestRunSyncerWithoutURIWaits(t *testing.T) {
	clearTrackingEnv(t)
	tf := trackingFlags{db: filepath.Join(t.TempDir(), "t.db")}
	tr, err := tf.open(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tr.runSyncer(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
}
