package pipelinetest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/mlflow"
	"github.com/flywheel-ml/flywheel/tracker/mlmodel/fromcard"
)

// StartMLflow starts the real MLflow server (internal/harness) and returns a
// client of it, closed when the test ends.
func StartMLflow(t testing.TB) *mlflow.Client {
	t.Helper()
	m := harness.StartMLflow(t)
	mc := mlflow.DefaultConfig()
	mc.TrackingURI = m.URL
	c, err := mlflow.New(mlflow.Options{Config: mc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// RegisterFolderVersion logs a folder version (model.onnx + model.json) as
// an MLflow Model in a run of experiment "champions", registers it as the
// next version of name and points alias at it (none when alias is "").
func RegisterFolderVersion(t testing.TB, c *mlflow.Client, dir, name, alias string) tracker.ModelVersion {
	t.Helper()
	ctx := context.Background()
	card, err := modelrepo.LoadCard(filepath.Join(dir, modelrepo.CardFile))
	if err != nil {
		t.Fatal(err)
	}
	graph, err := os.ReadFile(filepath.Join(dir, modelrepo.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	cardJSON, err := os.ReadFile(filepath.Join(dir, modelrepo.CardFile))
	if err != nil {
		t.Fatal(err)
	}
	run, err := tracker.Start(ctx, c, "champions", tracker.RunOptions{Name: "v" + filepath.Base(dir)})
	if err != nil {
		t.Fatal(err)
	}
	m, err := fromcard.Model(card, graph, run.ID(), "model")
	if err != nil {
		t.Fatal(err)
	}
	fs, err := m.Files()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"model/" + modelrepo.CardFile: cardJSON}
	for n, b := range fs {
		files["model/"+n] = b
	}
	mv, err := run.Finish(ctx, tracker.Result{Artifacts: map[string]string{"model/" + modelrepo.ModelFile: filepath.Join(dir, modelrepo.ModelFile)},
		Files: files, Model: name, ModelPath: "model", Alias: alias})
	if err != nil {
		t.Fatal(err)
	}
	return mv
}

// Versions returns the registry's version numbers of name, sorted.
func Versions(t testing.TB, c *mlflow.Client, name string) []string {
	t.Helper()
	vs, err := c.SearchModelVersions(context.Background(), "name='"+name+"'")
	if err != nil {
		t.Fatal(err)
	}
	nums := make([]string, 0, len(vs))
	for _, v := range vs {
		nums = append(nums, v.Version)
	}
	slices.Sort(nums)
	return nums
}
