package tracker_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/sqlite"
)

// A trainer maps its per-iteration callback onto ActiveRun.Iteration and its
// final result onto ActiveRun.Finish; the run id goes into the model card.
func ExampleStart() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "tracker-example")
	defer os.RemoveAll(dir)
	// cmd/flywheel opens MLflow+fallback or SQLite from --tracking-uri / --tracking-db.
	var t tracker.Tracker
	t, err := sqlite.Open(ctx, sqlite.Options{Config: sqlite.Config{Path: filepath.Join(dir, "tracking.db")}})
	if err != nil {
		panic(err)
	}
	defer t.Close()

	run, err := tracker.Start(ctx, t, "ridership", tracker.RunOptions{Name: "gbdt", Source: tracker.Source{Name: "flywheel train", GitCommit: "abc123"}})
	if err != nil {
		panic(err)
	}
	onIteration := func(step int, trainRMSE, validRMSE float64) error { // the trainer's callback
		return run.Iteration(ctx, tracker.Iteration{Step: int64(step), Metrics: map[string]float64{"train_rmse": trainRMSE, "valid_rmse": validRMSE}})
	}
	for step := 0; step < 3; step++ {
		if err := onIteration(step, 3-float64(step), 3.5-float64(step)); err != nil {
			panic(err)
		}
	}
	model := filepath.Join(dir, "model.onnx")
	os.WriteFile(model, []byte("onnx bytes"), 0o644)
	mv, err := run.Finish(ctx, tracker.Result{
		Params:    map[string]string{"algorithm": "gbdt", "learning_rate": "0.1"},
		Metrics:   map[string]float64{"test_mae": 1.2},
		FinalStep: 2,
		Datasets:  []tracker.Dataset{{Name: "chicago", Digest: "sha256:…", SourceType: "local", Source: "data/chicago.csv", Context: "training"}},
		Artifacts: map[string]string{"model/model.onnx": model},
		Model:     "ridership", ModelPath: "model", Alias: "champion",
	})
	if err != nil {
		panic(err)
	}
	r, _ := t.GetRun(ctx, run.ID())
	fmt.Println(r.Info.Status, r.Metrics["valid_rmse"].Value, r.Metrics["valid_rmse"].Step, mv.Version, mv.Aliases)
	// Output: FINISHED 1.5 2 1 [champion]
}
