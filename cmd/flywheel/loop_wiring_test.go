package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/localstore"
	"github.com/flywheel-ml/flywheel/tracker/mlflowtest"
	"github.com/flywheel-ml/flywheel/train/dataset"
	"github.com/flywheel-ml/flywheel/train/features"
	"github.com/flywheel-ml/flywheel/train/jobs"
	"github.com/flywheel-ml/flywheel/train/pipeline"
	"github.com/flywheel-ml/flywheel/train/replay"
	"github.com/flywheel-ml/flywheel/train/serving/servetest"
)

// copyDir copies the files of src into dst (one level).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	es, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// chicagoFeedback is what serve's export holds after a replay of [from, until]
// with labels: the served features (the default feature set) and the true ridership.
func chicagoFeedback(t *testing.T, from, until string) []pipeline.Feedback {
	t.Helper()
	recs, err := replay.ReadCSV(testCSV, "date", "ridership")
	if err != nil {
		t.Fatal(err)
	}
	f, _ := time.Parse(features.DateLayout, from)
	u, _ := time.Parse(features.DateLayout, until)
	d, err := dataset.Load(testCSV)
	if err != nil {
		t.Fatal(err)
	}
	set := d.FeatureSet(features.WeatherObserved)
	names := set.Names()
	v1 := int64(1)
	var out []pipeline.Feedback
	for _, r := range recs {
		if r.Date.Before(f) || r.Date.After(u) {
			continue
		}
		x, err := set.FromMap(r.Values, r.Date)
		if err != nil {
			t.Fatal(err)
		}
		m := make(map[string]float64, len(names))
		for i, n := range names {
			m[n] = x[i]
		}
		ds := r.Date.Format(features.DateLayout)
		out = append(out, pipeline.Feedback{ID: "replay-" + ds, Model: "ridership", Version: &v1, PredictedAt: r.Date,
			LabelledAt: r.Date.Add(24 * time.Hour), Features: m, Label: r.Label, Parameters: map[string]any{"date": ds}})
	}
	return out
}

// TestTrainerBuiltinTracked runs `flywheel trainer` wired as in production —
// the chicago base dataset through train/features, the built-in trainer with
// the committed champion's algorithm (gbdt) and params, the SQLite tracker —
// against labelled 2015 feedback: a candidate made worse by a job override is
// rejected with nothing published or tracked; the next job publishes v2 and
// the tracker holds its run (params, metrics, iter_* history, dataset digest,
// artifacts), registered version and alias champion.
func TestTrainerBuiltinTracked(t *testing.T) {
	dir := t.TempDir()
	models := filepath.Join(dir, "models")
	copyDir(t, "../../models/ridership/1", filepath.Join(models, "ridership", "1"))
	serve := servetest.New(models, "adm")
	defer serve.Close()
	serve.AddFeedback(chicagoFeedback(t, "2015-01-01", "2015-06-30")...)
	trackingDB := filepath.Join(dir, "tracking.db")

	tr := startTrainer(t, func(addr string) []string {
		return []string{"--listen", addr, "--token", trainerToken, "--db", filepath.Join(dir, "jobs.db"),
			"--models", models, "--work-dir", filepath.Join(dir, "work"), "--data", testCSV, "--serve-url", serve.URL,
			"--admin-token", "adm", "--tracking-db", trackingDB, "--ready-wait", "10s", "--log-format", "json",
			"--set", "patience=10"}
	})
	base, logs := tr.base, tr.logs

	runJob := func(body string) jobs.Job {
		t.Helper()
		code, out := post(t, base+"/v1/retrain", "Bearer "+trainerToken, body)
		if code != 202 {
			t.Fatalf("retrain %s: %d %s", body, code, out)
		}
		var j jobs.Job
		_ = json.Unmarshal([]byte(out), &j)
		id := j.ID
		waitFor(t, "job "+id, 120*time.Second, func() bool { _, err := getJSON(base+"/v1/jobs/"+id, &j); return err == nil && j.Final() })
		for _, st := range j.Steps {
			t.Logf("%s step %-8s %-9s %6.3fs %s", id, st.Name, st.State, st.Seconds, st.Detail)
		}
		return j
	}

	// A candidate of one tiny-step tree is worse than the champion: rejected.
	j := runJob(`{"params":{"iterations":1,"learning_rate":1e-6}}`)
	if j.State != jobs.StateRejected || !strings.Contains(j.Reason, "not better than the champion") {
		t.Fatalf("worse candidate: %s: %s\n%s", j.State, j.Reason, logs.String())
	}
	if _, err := os.Stat(filepath.Join(models, "ridership", "2")); err == nil {
		t.Fatal("a rejected candidate was published")
	}

	j = runJob(`{}`)
	if j.State != jobs.StateSucceeded {
		t.Fatalf("job %s: %s\n%s", j.State, j.Reason, logs.String())
	}
	c, err := modelrepo.LoadCard(filepath.Join(models, "ridership", "2", modelrepo.CardFile))
	if err != nil {
		t.Fatal(err)
	}
	if c.Training.Algorithm != "gbdt" || c.Training.Tracker != "sqlite" || c.Training.RunID == "" || c.Version != 2 {
		t.Fatalf("card training = %+v (version %d)", c.Training, c.Version)
	}
	if got := c.FeatureNames(); strings.Join(got, ",") != strings.Join(features.Names(), ",") {
		t.Errorf("card features %v", got)
	}
	if c.Training.Dataset.Until < "2015-05-01" {
		t.Errorf("trained until %s: the 2015 labels are not in the training data", c.Training.Dataset.Until)
	}
	if hm, cm := c.Metrics["holdout"]["mae"], c.Metrics["holdout_champion"]["mae"]; !(hm < cm) {
		t.Errorf("holdout mae candidate %v, champion %v", hm, cm)
	}
	tr.stop(t, 20*time.Second)

	// The tracker (reopened: the trainer closed it) holds the run.
	st, err := localstore.Open(context.Background(), localstore.Options{Config: localstore.Config{URL: trackingDB}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bg := context.Background()
	run, err := st.GetRun(bg, c.Training.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if run.Info.Status != tracker.StatusFinished || run.Tags["flywheel.job_id"] != j.ID || run.Params["algorithm"] != "gbdt" ||
		run.Params["param.patience"] != "10" || run.Params["param.max_leaves"] != "31" {
		t.Errorf("run = %+v", run)
	}
	for _, k := range []string{"holdout_mae", "champion_holdout_mae", "test_mae", "train_rmse"} {
		if _, ok := run.Metrics[k]; !ok {
			t.Errorf("run lacks metric %s: %v", k, run.Metrics)
		}
	}
	hist, err := st.MetricHistory(bg, run.Info.ID, "iter_train_rmse")
	if err != nil || len(hist) < 5 || hist[0].Step != 1 {
		t.Errorf("iter_train_rmse history = %d steps (%v)", len(hist), err)
	}
	if len(run.Datasets) != 1 || run.Datasets[0].Digest != tracker.ShortDigest(c.Training.Dataset.Digest) || run.Datasets[0].Context != "training" {
		t.Errorf("datasets = %+v, want digest %s", run.Datasets, c.Training.Dataset.Digest)
	}
	rc, err := st.OpenArtifact(bg, run.Info.ID, "model/model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	want, _ := os.ReadFile(filepath.Join(models, "ridership", "2", "model.onnx"))
	if !bytes.Equal(got, want) {
		t.Error("the tracked model.onnx differs from the published one")
	}
	mv, err := st.GetModelVersionByAlias(bg, "ridership", pipeline.ChampionAlias)
	if err != nil || mv.RunID != run.Info.ID {
		t.Errorf("alias champion = %+v, %v", mv, err)
	}
	// An MLflow Model; the card records the registry's number (the
	// repository's 1 was taken by the champion, so the numbers differ).
	if rc, err := st.OpenArtifact(bg, run.Info.ID, "model/MLmodel"); err != nil {
		t.Errorf("model/MLmodel: %v", err)
	} else {
		b, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Contains(b, []byte("loader_module: mlflow.onnx")) {
			t.Errorf("model/MLmodel:\n%s", b)
		}
	}
	if pc := loadCard(t, filepath.Join(models, "ridership", "2")); pc.Training.RegistryVersion != mv.Version {
		t.Errorf("published card registry_version %q, registry %s", pc.Training.RegistryVersion, mv.Version)
	}
	t.Logf("run %s: holdout mae %.4f vs champion %.4f; %d iterations; registered version %s", run.Info.ID,
		run.Metrics["holdout_mae"].Value, run.Metrics["champion_holdout_mae"].Value, len(hist), mv.Version)
}

// TestTrackingBackends records a run the way the pipeline's track step does
// (tracker.Start, ActiveRun.Log with history steps, RegisterModel, End) on
// each backend the trainer opens from its tracking flags, and reads
// everything back from the backend.
func TestTrackingBackends(t *testing.T) {
	srv, err := mlflowtest.New()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, tc := range []struct {
		name, uri, kind string
	}{
		{"sqlite", "", "sqlite"},
		{"mlflow", srv.URL, "mlflow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := trainerFlags{track: true}
			f.tf = trackingFlags{uri: tc.uri, db: filepath.Join(t.TempDir(), "sub", "tracking.db"), timeout: 5 * time.Second, retries: 1}
			tr, err := loopTracker(ctx, f, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			if tr.kind != tc.kind {
				t.Errorf("kind %s", tr.kind)
			}
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			run, err := tracker.Start(ctx, tr, "flywheel-retraining", tracker.RunOptions{Name: "job-1",
				Tags: map[string]string{"flywheel.job_id": "job-1"}, Source: tracker.Source{Name: "flywheel trainer", Type: "JOB"}})
			must(err)
			for i := 1; i <= 3; i++ {
				must(run.LogMetrics(ctx, int64(i), map[string]float64{"iter_train_rmse": 3 - float64(i)/2}))
			}
			must(run.Log(ctx, tracker.Result{Params: map[string]string{"algorithm": "mlp", "param.epochs": "300"},
				Metrics:  map[string]float64{"holdout_mae": 1.25},
				Datasets: []tracker.Dataset{{Name: "chicago+feedback", Digest: "sha256:abc", SourceType: "local", Source: `{"uri":"/w/snapshot.csv"}`, Profile: `{"num_rows":42}`, Context: "training"}},
				Files:    map[string][]byte{"model/model.json": []byte(`{"name":"ridership"}`)}}))
			mv, err := run.RegisterModel(ctx, "ridership", "model", pipeline.ChampionAlias)
			must(err)
			must(run.End(ctx, tracker.StatusFinished))
			id := run.ID()

			got, err := tr.GetRun(ctx, id)
			must(err)
			if got.Info.Status != tracker.StatusFinished || got.Params["param.epochs"] != "300" || got.Metrics["holdout_mae"].Value != 1.25 ||
				got.Tags["flywheel.job_id"] != "job-1" || got.Tags[tracker.TagSourceName] != "flywheel trainer" {
				t.Errorf("run = %+v", got)
			}
			if len(got.Datasets) != 1 || got.Datasets[0].Digest != "sha256:abc" || !strings.Contains(got.Datasets[0].Profile, "42") {
				t.Errorf("datasets = %+v", got.Datasets)
			}
			hist, err := tr.MetricHistory(ctx, id, "iter_train_rmse")
			must(err)
			if len(hist) != 3 || hist[2].Step != 3 || hist[2].Value != 1.5 {
				t.Errorf("history = %+v", hist)
			}
			alias, err := tr.GetModelVersionByAlias(ctx, "ridership", pipeline.ChampionAlias)
			must(err)
			if alias.Version != mv.Version || alias.RunID != id || mv.Version != strconv.Itoa(1) {
				t.Errorf("alias → %+v, registered %s", alias, mv.Version)
			}
		})
	}
}

// TestLoopFeatures checks that the base dataset and replay produce exactly
// the committed champion's features, in its order, for the same day.
func TestLoopFeatures(t *testing.T) {
	c, err := modelrepo.LoadCard("../../models/ridership/1/" + modelrepo.CardFile)
	if err != nil {
		t.Fatal(err)
	}
	base, err := loopBase(trainerFlags{data: testCSV, target: "ridership", features: featuresRidership}).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(base.Names, ",") != strings.Join(c.FeatureNames(), ",") {
		t.Fatalf("base names %v, champion %v", base.Names, c.FeatureNames())
	}
	recs, err := replay.ReadCSV(testCSV, "date", "ridership")
	if err != nil {
		t.Fatal(err)
	}
	// the base leaves out the days without a year of lag history
	warm := len(recs) - len(base.Rows)
	if warm != 405 || !base.Rows[0].Date.Equal(recs[warm].Date) {
		t.Fatalf("%d replay rows, %d base rows from %s", len(recs), len(base.Rows), base.Rows[0].Date.Format(features.DateLayout))
	}
	f := replayFeatures(featuresRidership, recs)
	hol := features.Index(base.Names, features.HolidayName)
	for _, tc := range []struct {
		name string
		i    int
	}{{"first day", 0}, {"a holiday (2015-07-03, observed)", -1}, {"last day", len(base.Rows) - 1}} {
		i := tc.i
		if i < 0 {
			for k, r := range base.Rows {
				if r.Date.Format(features.DateLayout) == "2015-07-03" {
					i = k
				}
			}
		}
		rec := recs[i+warm]
		x, err := f(rec.Values, rec.Date)
		if err != nil {
			t.Fatal(err)
		}
		if !rec.Date.Equal(base.Rows[i].Date) || len(x) != len(base.Names) || strings.Trim(fmt.Sprint(x), "[]") != strings.Trim(fmt.Sprint(base.Rows[i].Features), "[]") {
			t.Errorf("%s: replay %v\nbase %v", tc.name, x, base.Rows[i].Features)
		}
		if tc.i < 0 && x[hol] != 1 {
			t.Errorf("%s: holiday = %v", tc.name, x[hol])
		}
	}
	cols, err := loopBase(trainerFlags{data: testCSV, target: "ridership", features: featuresColumns}).Load(context.Background())
	if err != nil || len(cols.Names) != 48 {
		t.Errorf("columns base: %d names (%v)", len(cols.Names), err)
	}
}

// TestTrackerFallbackSync: with MLflow down the trainer's tracker records the
// whole run in SQLite; the syncer the trainer runs replays it, with its
// registered version and alias, once MLflow is back.
func TestTrackerFallbackSync(t *testing.T) {
	srv, err := mlflowtest.New()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.Stop()
	ctx := context.Background()
	f := trainerFlags{track: true}
	f.tf = trackingFlags{uri: srv.URL, db: filepath.Join(t.TempDir(), "tracking.db"), timeout: time.Second, retries: 0}
	tr, err := loopTracker(ctx, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	run, err := tracker.Start(ctx, tr, "flywheel-retraining", tracker.RunOptions{Name: "job-2", Tags: map[string]string{"flywheel.job_id": "job-2"}})
	if err != nil {
		t.Fatalf("start with MLflow down: %v", err)
	}
	id := run.ID()
	if err := run.Log(ctx, tracker.Result{Params: map[string]string{"algorithm": "gbdt"}, Metrics: map[string]float64{"holdout_mae": 0.9},
		Datasets: []tracker.Dataset{{Name: "chicago+feedback", Digest: "sha256:def", SourceType: "local", Source: `{"uri":"/w/snapshot.csv"}`, Profile: `{"num_rows":7}`, Context: "training"}},
		Files:    map[string][]byte{"model/model.json": []byte(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := run.RegisterModel(ctx, "ridership", "model", pipeline.ChampionAlias); err != nil {
		t.Fatal(err)
	}
	if err := run.End(ctx, tracker.StatusFinished); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tr.runSyncer(sctx, 100*time.Millisecond) }()
	defer func() { stop(); <-done }()
	var mv tracker.ModelVersion
	waitFor(t, "the run and alias in MLflow", 20*time.Second, func() bool {
		mv, err = tr.remote.GetModelVersionByAlias(ctx, "ridership", pipeline.ChampionAlias)
		return err == nil
	})
	synced, err := tr.remote.GetRun(ctx, mv.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if synced.Tags[tracker.TagLocalRunID] != id || synced.Params["algorithm"] != "gbdt" || synced.Metrics["holdout_mae"].Value != 0.9 ||
		synced.Info.Status != tracker.StatusFinished || len(synced.Datasets) != 1 || synced.Datasets[0].Digest != "sha256:def" {
		t.Errorf("synced run = %+v", synced)
	}
}
