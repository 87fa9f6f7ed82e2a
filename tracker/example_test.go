package tracker_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/localstore"
)

// A trainer maps its per-iteration callback onto ActiveRun.Iteration and its
// final result onto ActiveRun.Finish; the run id goes into the model card.
func ExampleStart() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "tracker-example")
	defer os.RemoveAll(dir)
	// cmd/flywheel opens MLflow+fallback or SQLite from --tracking-uri / --tracking-db.
	var t tracker.Tracker
	t, err := localstore.Open(ctx, localstore.Options{Config: localstore.Config{URL: filepath.Join(dir, "tracking.db")}})
	if err != nil {
		panic(err)
	}
	defer t.Close()

	run, err := tracker.Start(ctx, t, "ridership", tracker.RunOptions{Name: "gbdt", Source: tracker.Source{Name: "flywheel train", GitCommit: "abc123"}})
	if err != nil {
		panic(err)
	}
	// The trainer's per-iteration callback (errors surface in Finish).
	progress := func(iteration int, metrics map[string]float64) { run.Step(ctx, int64(iteration), metrics) }
	for it := 0; it < 3; it++ {
		progress(it, map[string]float64{"train_rmse": 3 - float64(it), "valid_rmse": 3.5 - float64(it)})
	}
	model := filepath.Join(dir, "model.onnx")
	os.WriteFile(model, []byte("onnx bytes"), 0o644)
	mv, err := run.Finish(ctx, tracker.Result{
		Params:    tracker.Params(map[string]any{"algorithm": "gbdt", "learning_rate": 0.1}),
		Metrics:   tracker.FlattenMetrics(map[string]map[string]float64{"test": {"mae": 1.2}}),
		FinalStep: 2,
		Datasets:  []tracker.Dataset{{Name: "chicago", Digest: "sha256:…", SourceType: "local", Source: "data/chicago.csv", Context: "training"}},
		Artifacts: map[string]string{"model/model.onnx": model},
		Files:     map[string][]byte{"model/model.json": []byte(`{"name":"ridership"}`)},
		Model:     "ridership", ModelPath: "model", Alias: "champion",
	})
	if err != nil {
		panic(err)
	}
	r, _ := t.GetRun(ctx, run.ID())
	fmt.Println(r.Info.Status, r.Metrics["valid_rmse"].Value, r.Metrics["valid_rmse"].Step, mv.Version, mv.Aliases)
	// Output: FINISHED 1.5 2 1 [champion]
}
