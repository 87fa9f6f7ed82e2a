package train

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/localstore"
)

func TestFitTracked(t *testing.T) {
	d, err := LoadData(chicagoCSV, "", Range{From: mustDate("2011-01-01"), Until: mustDate("2011-12-31")},
		Range{From: mustDate("2012-01-01"), Until: mustDate("2012-02-29")})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		algo    string
		mutate  func(c *Config, cancel context.CancelFunc)
		publish bool
		status  tracker.RunStatus
		steps   int // iter_train_rmse values
		wantErr string
	}{
		{name: "published gbdt", algo: GBDT, publish: true, status: tracker.StatusFinished, steps: 5},
		{name: "evaluated ridge", algo: Ridge, status: tracker.StatusFinished},
		{name: "failed fit", algo: GBDT, status: tracker.StatusFailed, wantErr: "no rows",
			mutate: func(c *Config, _ context.CancelFunc) { dd := *c.Data; dd.Test = nil; c.Data = &dd }},
		{name: "interrupted fit", algo: GBDT, status: tracker.StatusKilled, wantErr: "context canceled", steps: 1, // cancelled before step 2 is logged
			mutate: func(c *Config, cancel context.CancelFunc) {
				c.Progress = func(p Progress) {
					if p.Iteration == 2 {
						cancel()
					}
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			store, err := localstore.Open(context.Background(), localstore.Options{Config: localstore.Config{URL: filepath.Join(dir, "t.db")}})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cfg := testConfig(tc.algo, d)
			cfg.Params.GBDT.Iterations, cfg.Params.GBDT.EarlyStopping = 5, false
			var seen int
			cfg.Progress = func(Progress) { seen++ }
			if tc.mutate != nil {
				tc.mutate(&cfg, cancel)
			}
			tr := Tracking{Recorder: store, Kind: "sqlite", Run: tracker.RunOptions{Source: tracker.Source{Name: "test"}}}
			res, run, err := FitTracked(ctx, tr, cfg)
			var runID string
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || res != nil || run != nil {
					t.Fatalf("want error %q, got %v", tc.wantErr, err)
				}
				runs, err := store.SearchRuns(context.Background(), tracker.SearchQuery{})
				if err != nil || len(runs) != 1 {
					t.Fatalf("runs %v %v", runs, err)
				}
				runID = runs[0].Info.ID
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if res.Card.Training.RunID != run.ID() || res.Card.Training.Tracker != "sqlite" {
					t.Fatalf("card training %+v, run %s", res.Card.Training, run.ID())
				}
				if seen != len(res.History) {
					t.Errorf("the caller's Progress saw %d of %d iterations", seen, len(res.History))
				}
				if tc.publish {
					if _, _, err := Publish(filepath.Join(dir, "models"), "", res); err != nil {
						t.Fatal(err)
					}
				}
				mv, err := FinishRun(ctx, run, res, "champion")
				if err != nil {
					t.Fatal(err)
				}
				if tc.publish != (mv.Version == "1") {
					t.Errorf("registered %+v (published %v)", mv, tc.publish)
				}
				runID = run.ID()
			}
			r, err := store.GetRun(context.Background(), runID)
			if err != nil {
				t.Fatal(err)
			}
			if r.Info.Status != tc.status || r.Tags[TagModel] != "ridership" || r.Tags[TagAlgorithm] != tc.algo || r.Info.Name != "ridership-"+tc.algo {
				t.Errorf("run %+v tags %v, want status %s", r.Info, r.Tags, tc.status)
			}
			hist, err := store.MetricHistory(context.Background(), runID, StepPrefix+"train_rmse")
			if err != nil || len(hist) != tc.steps {
				t.Errorf("%d steps of iter_train_rmse, want %d (%v)", len(hist), tc.steps, err)
			}
			if tc.wantErr != "" {
				return
			}
			if r.Params["algorithm"] != tc.algo || r.Metrics["test_mae"].Value != res.Metrics["test"]["mae"] || len(r.Datasets) != 2 {
				t.Errorf("params %v metrics %v datasets %v", r.Params, r.Metrics, r.Datasets)
			}
			// Unpublished results log the in-memory model and card.
			rc, err := store.OpenArtifact(context.Background(), runID, ArtifactONNX)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			b.ReadFrom(rc)
			rc.Close()
			if !bytes.Equal(b.Bytes(), res.ONNX) {
				t.Errorf("model.onnx artifact differs")
			}
		})
	}
	if _, _, err := FitTracked(context.Background(), Tracking{}, testConfig(Ridge, d)); err == nil {
		t.Error("tracking without a recorder: no error")
	}
	if _, err := RunResult(&Result{}, "", ""); err == nil {
		t.Error("a result without a card: no error")
	}
}
