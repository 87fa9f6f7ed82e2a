package pipeline_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/localstore"
	"github.com/flywheel-ml/flywheel/train/external"
	"github.com/flywheel-ml/flywheel/train/jobs"
	"github.com/flywheel-ml/flywheel/train/pipeline"
	"github.com/flywheel-ml/flywheel/train/pipeline/pipelinetest"
	"github.com/flywheel-ml/flywheel/train/serving"
	"github.com/flywheel-ml/flywheel/train/serving/servetest"
)

const (
	model    = "ridership"
	baseDays = 366
)

type env struct {
	dir, models string
	store       *jobs.Store
	serve       *servetest.Server
	tracker     *localstore.Store // a real tracker; nil in TestNoTrackerAndConfig
	cfg         pipeline.Config
	trainer     pipeline.Trainer
	serving     pipeline.Serving
	feedback    pipeline.FeedbackSource
}

func newEnv(t *testing.T, threshold float64) *env {
	t.Helper()
	if _, _, err := ort.Setup(""); err != nil {
		t.Fatal(err)
	}
	e := &env{dir: t.TempDir()}
	e.models = filepath.Join(e.dir, "models")
	base := filepath.Join(e.dir, "base.csv")
	pipelinetest.WriteBase(t, base, baseDays)
	e.trainer = &external.Trainer{Command: pipelinetest.ExampleTrainer(), Timeout: time.Minute}
	pipelinetest.Champion(t, e.trainer, e.models, model, base, baseDays, threshold)
	e.serve = servetest.New(e.models, "adm")
	t.Cleanup(e.serve.Close)
	e.serving = &serving.Client{BaseURL: e.serve.URL, Token: "adm"}
	e.feedback = e.serving.(pipeline.FeedbackSource)
	tr, err := localstore.Open(context.Background(), localstore.Options{Config: localstore.Config{URL: filepath.Join(e.dir, "tracking.db")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	e.tracker = tr
	e.store, err = jobs.Open(context.Background(), jobs.Options{Path: filepath.Join(e.dir, "jobs.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Close() })
	e.cfg = pipeline.DefaultConfig()
	e.cfg.Model = model
	e.cfg.ModelsDir = e.models
	e.cfg.WorkDir = filepath.Join(e.dir, "work")
	e.cfg.WindowDays = 60
	e.cfg.ReadyWait = 5 * time.Second
	e.cfg.ReadyPoll = 20 * time.Millisecond
	return e
}

// runs returns the tracker's runs of the pipeline's experiment.
func (e *env) runs(t *testing.T) []tracker.Run {
	t.Helper()
	ctx := context.Background()
	exp, err := e.tracker.GetExperimentByName(ctx, e.cfg.Experiment)
	if errors.Is(err, tracker.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	runs, err := e.tracker.SearchRuns(ctx, tracker.SearchQuery{ExperimentIDs: []string{exp.ID}})
	if err != nil {
		t.Fatal(err)
	}
	return runs
}

func (e *env) pipeline(t *testing.T) *pipeline.Pipeline {
	t.Helper()
	p, err := pipeline.New(pipeline.Options{Config: e.cfg, Base: pipeline.CSVBase{Path: filepath.Join(e.dir, "base.csv"), Target: pipelinetest.Target},
		Feedback: e.feedback, Trainer: e.trainer, Predictor: pipeline.ONNXPredictor{}, Tracker: e.tracker, TrackerKind: "sqlite", Serving: e.serving})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runJob enqueues a job, runs the worker until it is final (or ctx stops).
func (e *env) runJob(t *testing.T, params string) jobs.Job {
	t.Helper()
	var raw []byte
	if params != "" {
		raw = []byte(params)
	}
	j, _, err := e.store.Enqueue(context.Background(), jobs.Request{Model: model, Trigger: jobs.TriggerAlert, GroupKey: "g-" + t.Name(), Alerts: []string{"ModelErrorHigh"}, Params: raw})
	if err != nil {
		t.Fatal(err)
	}
	return e.work(t, e.pipeline(t), j.ID, 60*time.Second)
}

func (e *env) work(t *testing.T, r jobs.Runner, id string, limit time.Duration) jobs.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	w, err := jobs.NewWorker(jobs.WorkerOptions{Store: e.store, Runner: r, Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for {
		j, err := e.store.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Final() {
			return j
		}
		if ctx.Err() != nil {
			t.Fatalf("job did not finish: %+v", j)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stepStates(j jobs.Job) string {
	var s []string
	for _, st := range j.Steps {
		s = append(s, st.Name+"="+st.State)
	}
	return strings.Join(s, " ")
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func TestPromote(t *testing.T) {
	e := newEnv(t, 4)
	e.serve.AddFeedback(pipelinetest.Feedback(model, baseDays, 120, 8)...)
	j := e.runJob(t, "")
	if j.State != jobs.StateSucceeded {
		t.Fatalf("job %s: %s\n%s\n%+v", j.State, j.Reason, stepStates(j), j.Steps)
	}
	want := "snapshot=succeeded train=succeeded evaluate=succeeded gate=succeeded track=succeeded publish=succeeded confirm=succeeded"
	if got := stepStates(j); got != want {
		t.Errorf("steps = %s", got)
	}
	for _, st := range j.Steps {
		if st.FinishedAt == nil || st.Seconds < 0 {
			t.Errorf("step %s has no timing: %+v", st.Name, st)
		}
	}
	if !strings.Contains(j.Steps[1].Log, "training linear model on 60 rows") {
		t.Errorf("trainer log not in the job: %q", j.Steps[1].Log)
	}
	cand, champ := j.Result["candidate_mae"].(float64), j.Result["champion_mae"].(float64)
	t.Logf("holdout mae: candidate %.4f, champion %.4f; steps: %s", cand, champ, stepStates(j))
	if !(cand < 1 && champ > 6) {
		t.Errorf("candidate %.3f champion %.3f: the candidate should have learnt the shift", cand, champ)
	}
	// Published atomically, with lineage; no temporary directory left.
	c, err := modelrepo.LoadCard(filepath.Join(e.models, model, "2", modelrepo.CardFile))
	if err != nil {
		t.Fatal(err)
	}
	digest := j.Result["dataset_digest"].(string)
	snap, _ := os.ReadFile(filepath.Join(e.cfg.WorkDir, j.ID, "attempt-1", "snapshot.csv"))
	sum := sha256.Sum256(snap)
	if digest != "sha256:"+hex.EncodeToString(sum[:]) || c.Training.Dataset.Digest != digest {
		t.Errorf("digest: job %s, card %s, file %x", digest, c.Training.Dataset.Digest, sum)
	}
	if c.Version != 2 || c.Name != model || c.Training.RunID == "" || c.Reference == nil || len(c.Reference.Features) != 3 || c.Thresholds["mae"] != 4 {
		t.Errorf("card = %+v", c)
	}
	if c.Training.Dataset.Rows != 60 || c.Training.Dataset.Until == "" {
		t.Errorf("card dataset = %+v", c.Training.Dataset)
	}
	ents, _ := os.ReadDir(filepath.Join(e.models, model))
	if len(ents) != 2 {
		t.Errorf("model dir holds %d entries, want versions 1 and 2", len(ents))
	}
	// The tracker holds the run, the dataset digest, the version and the alias.
	ctx := context.Background()
	runs := e.runs(t)
	if len(runs) != 1 || runs[0].Info.ID != c.Training.RunID || c.Training.Tracker != "sqlite" {
		t.Fatalf("runs %+v, card's run %s (%s)", runs, c.Training.RunID, c.Training.Tracker)
	}
	r := runs[0]
	if r.Info.Status != tracker.StatusFinished || len(r.Datasets) != 1 || r.Datasets[0].Digest != tracker.ShortDigest(digest) ||
		!strings.Contains(r.Datasets[0].Profile, digest) || r.Metrics["holdout_mae"].Value != cand || r.Params["window_days"] != "60" {
		t.Errorf("run = %+v", r)
	}
	for path, want := range map[string]string{"model/model.onnx": "", "model/model.json": `"run_id"`, "trainer.log": "wrote model.onnx"} {
		rc, err := e.tracker.OpenArtifact(ctx, r.Info.ID, path)
		if err != nil {
			t.Errorf("artifact %s: %v", path, err)
			continue
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if len(b) == 0 || !strings.Contains(string(b), want) {
			t.Errorf("artifact %s: %d bytes, want %q in it", path, len(b), want)
		}
	}
	if mv, err := e.tracker.GetModelVersionByAlias(ctx, model, pipeline.ChampionAlias); err != nil || mv.Version != j.Result["registered_version"] || mv.RunID != r.Info.ID {
		t.Errorf("alias %s: %+v, %v; registered %v", pipeline.ChampionAlias, mv, err, j.Result["registered_version"])
	}
	// Every feedback row is in the snapshot: 60 trained on, 28 held out, the rest outside the window.
	if j.Result["feedback_rows"] != 120.0 || j.Result["holdout_rows"] != 28.0 || j.Result["train_rows"] != 60.0 {
		t.Errorf("result = %v", j.Result)
	}
}

func TestRejectAndFail(t *testing.T) {
	for _, tc := range []struct {
		name      string
		threshold float64
		shift     float64
		params    string
		trainer   []string
		state     string
		reason    []string
		lastStep  string
	}{
		{name: "margin", threshold: 100, shift: 8, params: `{"margin":0.99}`, state: jobs.StateRejected,
			reason: []string{"candidate mae", "vs champion v1", "not better than the champion by the margin"}, lastStep: "gate=rejected"},
		{name: "no drift", threshold: 100, shift: 0, params: `{"window_days":14}`, state: jobs.StateRejected,
			reason: []string{"paired bootstrap 95 % interval", "not better than the champion beyond noise"}, lastStep: "gate=rejected"},
		{name: "threshold", threshold: 0.000001, shift: 0, state: jobs.StateRejected,
			reason: []string{"beyond noise", "above the mae threshold 0.0000"}, lastStep: "gate=rejected"},
		{name: "threshold override", threshold: 100, shift: 0, params: `{"threshold":0.1}`, state: jobs.StateRejected,
			reason: []string{"above the mae threshold 0.1000"}, lastStep: "gate=rejected"},
		{name: "trainer fails", threshold: 100, shift: 8, trainer: []string{"/bin/sh", "-c", "echo cuda out of memory >&2; exit 3", "sh"},
			state: jobs.StateFailed, reason: []string{"exit status 3", "cuda out of memory"}, lastStep: "train=failed"},
		{name: "bad params", threshold: 100, shift: 8, params: `{"margin":2}`, state: jobs.StateFailed, reason: []string{"margin 2 must be in [0, 1)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.threshold)
			if tc.trainer != nil {
				e.trainer = &external.Trainer{Command: tc.trainer, Timeout: time.Minute}
			}
			e.serve.AddFeedback(pipelinetest.Feedback(model, baseDays, 120, tc.shift)...)
			j := e.runJob(t, tc.params)
			t.Logf("%s: %s", j.State, j.Reason)
			if j.State != tc.state {
				t.Fatalf("state = %s (%s), want %s; steps %s", j.State, j.Reason, tc.state, stepStates(j))
			}
			for _, r := range tc.reason {
				if !strings.Contains(j.Reason, r) {
					t.Errorf("reason %q lacks %q", j.Reason, r)
				}
			}
			if tc.lastStep != "" && !strings.HasSuffix(stepStates(j), tc.lastStep) {
				t.Errorf("steps = %s, want to end with %s", stepStates(j), tc.lastStep)
			}
			if exists(filepath.Join(e.models, model, "2")) {
				t.Error("a rejected or failed job published a version")
			}
			if runs := e.runs(t); len(runs) != 0 {
				t.Errorf("tracker runs = %+v, want none before the gate passes", runs)
			}
		})
	}
}

// blockingServing never reports ready; it returns when ctx ends.
type blockingServing struct{ entered chan struct{} }

func (b blockingServing) VersionReady(ctx context.Context, _ string, _ int) (bool, error) {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return false, ctx.Err()
}

// TestRetryAfterInterrupt stops the trainer while it waits for serve, after
// publishing: the retried attempt publishes nothing new and only confirms.
func TestRetryAfterInterrupt(t *testing.T) {
	e := newEnv(t, 4)
	e.serve.AddFeedback(pipelinetest.Feedback(model, baseDays, 120, 8)...)
	good := e.serving
	e.serving = blockingServing{entered: make(chan struct{}, 1)}
	j, _, _ := e.store.Enqueue(context.Background(), jobs.Request{Model: model, Trigger: jobs.TriggerManual})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, _ := jobs.NewWorker(jobs.WorkerOptions{Store: e.store, Runner: e.pipeline(t), Poll: 10 * time.Millisecond})
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	select {
	case <-e.serving.(blockingServing).entered:
	case <-ctx.Done():
		t.Fatal("never reached confirm")
	}
	cancel() // graceful shutdown during confirm
	<-done
	got, _ := e.store.Get(context.Background(), j.ID)
	if got.State != jobs.StateRunning || !strings.HasSuffix(stepStates(got), "confirm=interrupted") {
		t.Fatalf("after shutdown: %s %s", got.State, stepStates(got))
	}
	if _, err := e.store.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.serving = good
	final := e.work(t, e.pipeline(t), j.ID, 30*time.Second)
	if final.State != jobs.StateSucceeded || final.Attempt != 2 {
		t.Fatalf("retry: %s attempt %d: %s\n%s", final.State, final.Attempt, final.Reason, stepStates(final))
	}
	var second []string
	for _, st := range final.Steps {
		if st.Attempt == 2 {
			second = append(second, st.Name+"="+st.State)
		}
	}
	if got := strings.Join(second, " "); got != "snapshot=skipped train=skipped evaluate=skipped gate=skipped track=skipped publish=skipped confirm=succeeded" {
		t.Errorf("attempt 2 steps = %s", got)
	}
	if runs := e.runs(t); exists(filepath.Join(e.models, model, "3")) || len(runs) != 1 {
		t.Errorf("retry published or tracked twice: runs %+v", runs)
	}
}

// TestFeedbackOverlapsBase feeds labels for days the base dataset already
// has: they replace the base rows instead of counting twice.
func TestFeedbackOverlapsBase(t *testing.T) {
	e := newEnv(t, 4)
	e.cfg.WindowDays = 0
	e.serve.AddFeedback(pipelinetest.Feedback(model, baseDays-30, 150, 8)...)
	j := e.runJob(t, "")
	t.Logf("%s: %s", j.State, j.Reason)
	if j.State == jobs.StateFailed {
		t.Fatalf("%s: %s", j.State, j.Reason)
	}
	// 336 base rows + 150 feedback rows = 486, of which 28 are held out.
	if j.Result["train_rows"] != 458.0 || !strings.Contains(j.Steps[0].Log, "30 base rows replaced by feedback rows of the same day") {
		t.Errorf("result %v, log %q", j.Result, j.Steps[0].Log)
	}
}

func TestNoTrackerAndConfig(t *testing.T) {
	e := newEnv(t, 4)
	e.serve.AddFeedback(pipelinetest.Feedback(model, baseDays, 120, 8)...)
	e.tracker = nil
	p, err := pipeline.New(pipeline.Options{Config: e.cfg, Base: pipeline.CSVBase{Path: filepath.Join(e.dir, "base.csv"), Target: pipelinetest.Target},
		Feedback: e.feedback, Trainer: e.trainer, Predictor: pipeline.ONNXPredictor{}, Serving: e.serving})
	if err != nil {
		t.Fatal(err)
	}
	j, _, _ := e.store.Enqueue(context.Background(), jobs.Request{Model: model})
	j = e.work(t, p, j.ID, time.Minute)
	if j.State != jobs.StateSucceeded || !strings.Contains(stepStates(j), "track=skipped") || !exists(filepath.Join(e.models, model, "2", "model.onnx")) {
		t.Errorf("without tracker: %s %s %s", j.State, j.Reason, stepStates(j))
	}
	bad := pipeline.DefaultConfig()
	bad.Metric, bad.HoldoutDays, bad.Margin, bad.BaseUntil = "auc", 0, 1, "2020/01/01"
	err = bad.Validate()
	for _, want := range []string{`metric "auc"`, "holdout_days 0", "margin 1", `base_until "2020/01/01"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want %q", err, want)
		}
	}
	if _, err := pipeline.New(pipeline.Options{Config: pipeline.DefaultConfig()}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("New without parts = %v", err)
	}
}
