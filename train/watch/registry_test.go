package watch_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/train/pipeline"
	"github.com/flywheel-ml/flywheel/train/pipeline/pipelinetest"
	"github.com/flywheel-ml/flywheel/train/serving"
	"github.com/flywheel-ml/flywheel/train/serving/servetest"
	"github.com/flywheel-ml/flywheel/train/watch"
)

// TestWatchRegistryRollsBack runs the watch in registry mode against the
// real MLflow: version 2 holds models:/ridership@champion and replaced
// version 1 (its flywheel.champion_version tag); its live labels show it
// worse, so the watch moves the alias back to version 1, tags version 2
// rolled back, records a rollback run and counts it (ModelRolledBack).
func TestWatchRegistryRollsBack(t *testing.T) {
	client := pipelinetest.StartMLflow(t)
	if _, _, err := ort.Setup(""); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	published := now.Add(-30 * time.Minute)
	models := repo(t, published)
	for _, v := range []string{"1", "2"} {
		if mv := pipelinetest.RegisterFolderVersion(t, client, filepath.Join(models, "ridership", v), "ridership", "champion"); mv.Version != v {
			t.Fatalf("registered %+v, want version %s", mv, v)
		}
	}
	// version 2 is deliberately worse: off by 2.5 thousand riders every day
	s := servetest.New(t.TempDir(), "adm")
	defer s.Close()
	s.AddFeedback(feedback(t, 28, published.Add(time.Minute), func(int) float64 { return 2.5 })...)
	newWatcher := func(reg prometheus.Registerer) *watch.Watcher {
		cfg := watch.DefaultConfig()
		cfg.ModelsDir, cfg.Window, cfg.MinRows = filepath.Join(t.TempDir(), "watch"), time.Hour, 14
		w, err := watch.New(watch.Options{Config: cfg, Feedback: &serving.Client{BaseURL: s.URL, Token: "adm"},
			Predictor: pipeline.ONNXPredictor{}, Registry: client, Recorder: client, Experiment: "rollbacks",
			Registerer: reg, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}

	// Without the champion_version tag version 2 replaced nothing known.
	if v, err := newWatcher(nil).Check(ctx); err != nil || v.Version != 0 || !strings.Contains(v.Note, pipeline.TagChampionVersion) {
		t.Fatalf("untagged version 2: %+v %v", v, err)
	}
	if err := client.AnnotateModelVersion(ctx, "ridership", "2", tracker.VersionAnnotation{Tags: map[string]string{pipeline.TagChampionVersion: "1"}}); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	w := newWatcher(reg)
	v, err := w.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !v.RolledBack || v.Version != 2 || v.Previous != 1 || v.Rows != 28 || v.Decision.DiffLow <= 0 || v.RolledBackTo != "models:/ridership/1" {
		t.Fatalf("verdict %+v decision %+v", v, v.Decision)
	}
	if champ, err := client.GetModelVersionByAlias(ctx, "ridership", "champion"); err != nil || champ.Version != "1" {
		t.Fatalf("alias champion on %+v (%v), want version 1 back", champ, err)
	}
	v2, err := client.GetModelVersion(ctx, "ridership", "2")
	if err != nil || v2.Tags[watch.TagRolledBack] != now.Format(time.RFC3339) || v2.Tags[watch.TagRestoredVersion] != "1" {
		t.Fatalf("version 2 tags %v (%v), want rolled back at %s to 1", v2.Tags, err, now.Format(time.RFC3339))
	}
	if n := testutil.ToFloat64(mustCounter(t, reg)); n != 1 {
		t.Fatalf("flywheel_trainer_rollbacks_total = %v, want 1", n)
	}
	exp, err := client.GetExperimentByName(ctx, "rollbacks")
	if err != nil {
		t.Fatal(err)
	}
	runs, err := client.SearchRuns(ctx, tracker.SearchQuery{ExperimentIDs: []string{exp.ID}})
	if err != nil || len(runs) != 1 || runs[0].Tags["flywheel.rolled_back_version"] != "2" || runs[0].Tags["flywheel.restored_version"] != "1" ||
		runs[0].Info.Status != tracker.StatusFinished {
		t.Fatalf("rollback runs %+v (%v), want one FINISHED run for version 2 → 1", runs, err)
	}
	// The next check watches version 1, which replaced nothing.
	if v, err := w.Check(ctx); err != nil || v.Version != 0 || v.RolledBack {
		t.Fatalf("after the rollback: %+v %v", v, err)
	}
	// Put back on version 2 by hand, it is not rolled back a second time.
	if err := client.SetAlias(ctx, "ridership", "champion", "2"); err != nil {
		t.Fatal(err)
	}
	if v, err := w.Check(ctx); err != nil || v.Version != 0 || !strings.Contains(v.Note, "rolled back once already") {
		t.Fatalf("version 2 again: %+v %v", v, err)
	}
}
