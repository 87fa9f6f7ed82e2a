package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/localstore"
	"github.com/flywheel-ml/flywheel/train"
)

// trackedTrainArgs trains a small, fast gbdt on two years of data: 12
// rounds, every one run (patience above the round count), so 12 steps of
// iter_train_rmse and iter_valid_rmse; no backtest (one algorithm). A
// learning rate of 0.3 makes it beat the seasonal naive, so it is published.
func trackedTrainArgs(t *testing.T) []string {
	params := filepath.Join(t.TempDir(), "params.yaml")
	if err := os.WriteFile(params, []byte("gbdt:\n  iterations: 12\n  max_leaves: 8\n  patience: 50\n  tolerance: 0\n  learning_rate: 0.3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"--data", testCSV, "--algorithm", "gbdt", "--quiet", "--git-commit", "abc123", "--params", params,
		"--train-from", "2010-01-01", "--train-until", "2011-12-31", "--test-from", "2012-01-01", "--test-until", "2012-03-31", "--backtest-folds", "0"}
}

const trackedSteps = 12

// trackedRun is what a backend holds about one run, in one shape for SQLite
// and the MLflow test server.
type trackedRun struct {
	info      tracker.RunInfo
	params    map[string]string
	tags      map[string]string
	metrics   []tracker.Metric // full histories
	datasets  []tracker.Dataset
	artifacts map[string][]byte
	versions  []tracker.ModelVersion // registered versions of the model from this run
	champion  string                 // the version the champion alias points at
}

func sqliteRun(t *testing.T, db, runID string) trackedRun {
	t.Helper()
	ctx := context.Background()
	s, err := localstore.Open(ctx, localstore.Options{Config: localstore.Config{URL: db}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.GetRun(ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	out := trackedRun{info: r.Info, params: r.Params, tags: r.Tags, datasets: r.Datasets, artifacts: map[string][]byte{}}
	if out.metrics, err = s.Metrics(ctx, r.Info.ID); err != nil {
		t.Fatal(err)
	}
	files, err := s.AllArtifacts(ctx, r.Info.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		rc, err := s.OpenArtifact(ctx, r.Info.ID, f.Path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out.artifacts[f.Path] = b
	}
	vs, err := s.ModelVersionsOfRun(ctx, r.Info.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		out.versions = append(out.versions, v.ModelVersion)
	}
	if mv, err := s.GetModelVersionByAlias(ctx, "ridership", "champion"); err == nil {
		out.champion = mv.Version
	}
	return out
}

// checkTrackedRun asserts a run of `flywheel train` holds everything: params,
// step metrics, final metrics, dataset digests, both published files byte for
// byte and the registered version with the champion alias.
func checkTrackedRun(t *testing.T, got trackedRun, c *modelrepo.Card, versionDir string) {
	t.Helper()
	if got.info.Status != tracker.StatusFinished || got.info.EndTime == 0 {
		t.Errorf("status %s end %d, want FINISHED", got.info.Status, got.info.EndTime)
	}
	for k, want := range map[string]string{"mlflow.source.name": "flywheel train", "mlflow.source.git.commit": "abc123",
		"mlflow.runName": "ridership-gbdt", train.TagModelVersion: strconv.Itoa(c.Version), train.TagAlgorithm: "gbdt"} {
		if got.tags[k] != want {
			t.Errorf("tag %s = %q, want %q", k, got.tags[k], want)
		}
	}
	// Params: every hyper-parameter of the card, plus algorithm and seed.
	want := train.FlatParams(c.Training.Params)
	want["algorithm"], want["seed"] = "gbdt", "1"
	if len(got.params) != len(want) {
		t.Errorf("%d params, want %d: %v", len(got.params), len(want), got.params)
	}
	for k, v := range want {
		if got.params[k] != v {
			t.Errorf("param %s = %q, want %q", k, got.params[k], v)
		}
	}
	if got.params["iterations"] != "12" || got.params["learning_rate"] != "0.3" {
		t.Errorf("params %v", got.params)
	}
	// Step metrics: iter_train_rmse and iter_valid_rmse at steps 1…12, timestamps in order.
	hist := map[string][]tracker.Metric{}
	for _, m := range got.metrics {
		hist[m.Key] = append(hist[m.Key], m)
	}
	for _, k := range []string{"iter_train_rmse", "iter_valid_rmse"} {
		h := hist[k]
		sort.SliceStable(h, func(i, j int) bool { return h[i].Step < h[j].Step })
		if len(h) != trackedSteps {
			t.Fatalf("%s has %d values, want %d", k, len(h), trackedSteps)
		}
		for i, m := range h {
			if m.Step != int64(i+1) || !(m.Value > 0) || m.Timestamp == 0 || (i > 0 && m.Timestamp < h[i-1].Timestamp) {
				t.Errorf("%s[%d] = %+v", k, i, m)
			}
		}
	}
	if tr := hist["iter_train_rmse"]; tr[len(tr)-1].Value >= tr[0].Value {
		t.Errorf("iter_train_rmse did not fall: %v … %v", tr[0].Value, tr[len(tr)-1].Value)
	}
	// Final metrics: the card's, once, at the final step.
	for split, ms := range c.Metrics {
		for k, v := range ms {
			h := hist[split+"_"+k]
			if len(h) != 1 || h[0].Value != v || h[0].Step != trackedSteps {
				t.Errorf("metric %s_%s = %+v, want %v at step %d", split, k, h, v, trackedSteps)
			}
		}
	}
	if h := hist["best_iteration"]; len(h) != 1 || h[0].Value != trackedSteps {
		t.Errorf("best_iteration %+v", h)
	}
	wantKeys := 2 + 2 // steps, best_iteration+fit_seconds, then the card's train_*, test_*, test_seasonal_naive_* …
	for _, ms := range c.Metrics {
		wantKeys += len(ms)
	}
	if len(hist) != wantKeys {
		t.Errorf("%d metric keys, want %d: %v", len(hist), wantKeys, hist)
	}
	// Datasets: training and test ranges, MLflow-style digests of the
	// card's sha256, the columns as an mlflow_colspec schema, a profile.
	dig := map[string]tracker.Dataset{}
	for _, d := range got.datasets {
		dig[d.Context] = d
		if d.Name != "chicago" || d.SourceType != "local" || !strings.Contains(d.Profile, `"num_rows"`) ||
			!strings.HasPrefix(d.Schema, `{"mlflow_colspec":[{"type":"datetime","name":"date"`) || !strings.Contains(d.Source, "chicago.csv") {
			t.Errorf("dataset %s: %.300s", d.Context, fmt.Sprintf("%+v", d))
		}
	}
	for ctx, full := range map[string]string{"training": c.Training.Dataset.Digest, "testing": c.Training.TestDataset.Digest} {
		d := dig[ctx]
		if len(d.Digest) != 8 || !strings.HasPrefix(full, "sha256:"+d.Digest) || !strings.Contains(d.Profile, full) {
			t.Errorf("%s dataset digest %q profile %.200s; card digest %s", ctx, d.Digest, d.Profile, full)
		}
	}
	if len(got.datasets) != 2 {
		t.Errorf("%d datasets, want 2", len(got.datasets))
	}
	// Artifacts: the MLflow Model directory; the published files byte for byte.
	if want := []string{"model/MLmodel", "model/conda.yaml", "model/input_example.json", "model/model.json", "model/model.onnx",
		"model/python_env.yaml", "model/requirements.txt", train.ArtifactReport}; fmt.Sprint(keys(got.artifacts)) != fmt.Sprint(want) {
		t.Errorf("artifacts %v, want %v", keys(got.artifacts), want)
	}
	for _, want := range []string{"loader_module: mlflow.onnx", "data: model.onnx", "onnx_version:", "feature_names:", "signature:"} {
		if !strings.Contains(string(got.artifacts["model/MLmodel"]), want) {
			t.Errorf("MLmodel lacks %q:\n%s", want, got.artifacts["model/MLmodel"])
		}
	}
	if !strings.Contains(got.tags[train.TagLogModelHistory], `"artifact_path":"model"`) {
		t.Errorf("tag %s = %.200q", train.TagLogModelHistory, got.tags[train.TagLogModelHistory])
	}
	if !bytes.Contains(got.artifacts[train.ArtifactReport], []byte(`"importance"`)) {
		t.Errorf("report artifact %.200s", got.artifacts[train.ArtifactReport])
	}
	for art, file := range map[string]string{"model/model.onnx": "model.onnx", "model/model.json": "model.json"} {
		b, err := os.ReadFile(filepath.Join(versionDir, file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.artifacts[art], b) {
			t.Errorf("artifact %s: %d bytes, published file %d bytes, not identical", art, len(got.artifacts[art]), len(b))
		}
	}
	// Registry: one version from this run, numbered as the repository's,
	// under the champion alias.
	if len(got.versions) != 1 || got.versions[0].Name != "ridership" || got.versions[0].RunID != got.info.ID ||
		got.champion != got.versions[0].Version {
		t.Errorf("versions %+v, champion %q", got.versions, got.champion)
	}
	if len(got.versions) == 1 && (c.Training.RegistryVersion != got.versions[0].Version || strconv.Itoa(c.Version) != got.versions[0].Version) {
		t.Errorf("card version %d, registry_version %q; the registry says %s", c.Version, c.Training.RegistryVersion, got.versions[0].Version)
	}
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func trainCmd(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := runTrain(context.Background(), args, &out, &errb); err != nil {
		t.Fatalf("flywheel train %v: %v\n%s%s", args, err, out.String(), errb.String())
	}
	return out.String() + errb.String()
}

func loadCard(t *testing.T, dir string) *modelrepo.Card {
	t.Helper()
	c, err := modelrepo.LoadCard(filepath.Join(dir, modelrepo.CardFile))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTrainTrackedSQLite(t *testing.T) {
	clearTrackingEnv(t)
	dir := t.TempDir()
	db, models := filepath.Join(dir, "tracking.db"), filepath.Join(dir, "models")
	out := trainCmd(t, append(trackedTrainArgs(t), "--models", models, "--tracking-db", db)...)
	vdir := filepath.Join(models, "ridership", "1")
	c := loadCard(t, vdir)
	if c.Training.Tracker != "sqlite" || c.Training.RunID == "" {
		t.Fatalf("card training %+v", c.Training)
	}
	if !strings.Contains(out, "tracked gbdt run "+c.Training.RunID+" (sqlite); registered ridership version 1, alias champion") {
		t.Errorf("output:\n%s", out)
	}
	checkTrackedRun(t, sqliteRun(t, db, c.Training.RunID), c, vdir)

	// A second publish registers version 2 and moves the alias.
	trainCmd(t, append(trackedTrainArgs(t), "--models", models, "--tracking-db", db, "--seed", "2", "--force")...)
	c2 := loadCard(t, filepath.Join(models, "ridership", "2"))
	r2 := sqliteRun(t, db, c2.Training.RunID)
	if c2.Training.RunID == c.Training.RunID || len(r2.versions) != 1 || r2.versions[0].Version != "2" || r2.champion != "2" {
		t.Errorf("second run %s: versions %+v champion %s", c2.Training.RunID, r2.versions, r2.champion)
	}
}

func metricSet(ms []tracker.Metric) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = fmt.Sprintf("%s@%d/%d=%v", m.Key, m.Step, m.Timestamp, m.Value)
	}
	sort.Strings(out)
	return out
}

func TestTrainTrackingVariants(t *testing.T) {
	clearTrackingEnv(t)
	cases := []struct {
		name  string
		args  []string
		check func(t *testing.T, db, models, out string)
	}{
		{"no tracking", []string{"--track=false"}, func(t *testing.T, db, models, out string) {
			c := loadCard(t, filepath.Join(models, "ridership", "1"))
			if c.Training.RunID != "" || c.Training.Tracker != "" || strings.Contains(out, "tracked") {
				t.Errorf("card training %+v\n%s", c.Training, out)
			}
			if _, err := os.Stat(db); !os.IsNotExist(err) {
				t.Errorf("tracking database created: %v", err)
			}
		}},
		{"not published", []string{"--publish=false", "--algorithm", "ridge"}, func(t *testing.T, db, models, out string) {
			runs := searchAll(t, db)
			if len(runs) != 1 {
				t.Fatalf("%d runs", len(runs))
			}
			r := sqliteRun(t, db, runs[0].Info.ID)
			if r.info.Status != tracker.StatusFinished || len(r.versions) != 0 || r.champion != "" || len(r.artifacts["model/model.onnx"]) == 0 ||
				!bytes.Contains(r.artifacts["model/model.json"], []byte(r.info.ID)) || r.tags[train.TagModelVersion] != "" {
				t.Errorf("run %+v versions %v artifacts %v", r.info, r.versions, keys(r.artifacts))
			}
			if _, err := os.Stat(models); !os.IsNotExist(err) {
				t.Errorf("published: %v", err)
			}
		}},
		{"comparison", []string{"--algorithm", "ridge,gbdt", "--alias", "", "--backtest-folds", "1"}, func(t *testing.T, db, models, out string) {
			c := loadCard(t, filepath.Join(models, "ridership", "1"))
			runs := searchAll(t, db)
			if len(runs) != 2 {
				t.Fatalf("%d runs", len(runs))
			}
			group := runs[0].Tags[train.TagComparison]
			selected := 0
			for _, run := range runs {
				r := sqliteRun(t, db, run.Info.ID)
				if r.tags[train.TagComparison] != group || group == "" || r.info.Status != tracker.StatusFinished || r.champion != "" {
					t.Errorf("run %s tags %v status %s champion %q", r.info.ID, r.tags, r.info.Status, r.champion)
				}
				if r.tags[train.TagSelected] == "true" {
					selected++
					if r.info.ID != c.Training.RunID || len(r.versions) != 1 || r.params["algorithm"] != c.Training.Algorithm {
						t.Errorf("selected run %s (card %s): versions %v", r.info.ID, c.Training.RunID, r.versions)
					}
				} else if len(r.versions) != 0 || r.tags[train.TagSelected] != "false" {
					t.Errorf("unselected run %s: tags %v versions %v", r.info.ID, r.tags, r.versions)
				}
			}
			if selected != 1 {
				t.Errorf("%d selected runs", selected)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			db, models := filepath.Join(dir, "tracking.db"), filepath.Join(dir, "models")
			out := trainCmd(t, append(append(trackedTrainArgs(t), "--models", models, "--tracking-db", db), tc.args...)...)
			tc.check(t, db, models, out)
		})
	}
}

func searchAll(t *testing.T, db string) []tracker.Run {
	t.Helper()
	s, err := localstore.Open(context.Background(), localstore.Options{Config: localstore.Config{URL: db}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	runs, err := s.SearchRuns(context.Background(), tracker.SearchQuery{})
	if err != nil {
		t.Fatal(err)
	}
	return runs
}
