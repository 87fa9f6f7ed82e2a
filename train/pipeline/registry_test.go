package pipeline_test

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/mlflow"
	"github.com/flywheel-ml/flywheel/train/jobs"
	"github.com/flywheel-ml/flywheel/train/pipeline"
	"github.com/flywheel-ml/flywheel/train/pipeline/pipelinetest"
)

// aliasServing reports a version ready once the alias names it (what a
// registry-following serve converges to; the end-to-end test runs serve).
type aliasServing struct{ reg *mlflow.Client }

func (s aliasServing) VersionReady(ctx context.Context, model string, v int) (bool, error) {
	mv, err := s.reg.GetModelVersionByAlias(ctx, model, pipeline.ChampionAlias)
	return err == nil && mv.Version == strconv.Itoa(v), err
}

// stuckAlias never moves the alias: SetAlias waits until the job is
// interrupted, as a trainer killed between registering and promoting.
type stuckAlias struct {
	*mlflow.Client
	entered chan struct{}
}

func (s stuckAlias) SetAlias(ctx context.Context, _, _, _ string) error {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}

// TestRegistryMode runs the pipeline with the real MLflow as the only model
// store: the champion comes from models:/ridership@champion, the candidate
// is registered tagged with its job, and the alias moves last. The first
// attempt is interrupted after registering, before the alias moved; the
// retry finds the job's version by its tag, registers nothing new and
// promotes it.
func TestRegistryMode(t *testing.T) {
	client := pipelinetest.StartMLflow(t)
	ctx := context.Background()
	e := newEnv(t, 4)
	e.serve.AddFeedback(pipelinetest.Feedback(model, baseDays, 120, 8)...)
	if mv := pipelinetest.RegisterFolderVersion(t, client, filepath.Join(e.models, model, "1"), model, pipeline.ChampionAlias); mv.Version != "1" {
		t.Fatalf("champion registered as %+v", mv)
	}
	cfg := e.cfg
	cfg.ModelsDir = "" // no shared folder
	newPipeline := func(reg pipeline.Registry) *pipeline.Pipeline {
		p, err := pipeline.New(pipeline.Options{Config: cfg, Base: pipeline.CSVBase{Path: filepath.Join(e.dir, "base.csv"), Target: pipelinetest.Target},
			Feedback: e.feedback, Trainer: e.trainer, Predictor: pipeline.ONNXPredictor{}, Tracker: client, TrackerKind: "mlflow",
			Serving: aliasServing{client}, Registry: reg})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Attempt 1: interrupted while moving the alias.
	stuck := stuckAlias{Client: client, entered: make(chan struct{}, 1)}
	j, _, err := e.store.Enqueue(ctx, jobs.Request{Model: model, Trigger: jobs.TriggerAlert, GroupKey: "g", Alerts: []string{"FeatureDrift"}})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	w, _ := jobs.NewWorker(jobs.WorkerOptions{Store: e.store, Runner: newPipeline(stuck), Poll: 10 * time.Millisecond})
	done := make(chan struct{})
	go func() { w.Run(wctx); close(done) }()
	select {
	case <-stuck.entered:
	case <-wctx.Done():
		got, _ := e.store.Get(ctx, j.ID)
		t.Fatalf("never reached the alias move: %s %s %s", got.State, got.Reason, stepStates(got))
	}
	cancel()
	<-done
	got, _ := e.store.Get(ctx, j.ID)
	if !strings.HasSuffix(stepStates(got), "track=succeeded publish=interrupted") {
		t.Fatalf("after the interruption: %s %s", got.State, stepStates(got))
	}
	if mv, err := client.GetModelVersionByAlias(ctx, model, pipeline.ChampionAlias); err != nil || mv.Version != "1" {
		t.Fatalf("the alias moved before publish: %+v %v", mv, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.WorkDir, "registry", model, "1", modelrepo.ModelFile)); err != nil {
		t.Errorf("the champion was not evaluated from a registry download: %v", err)
	}

	// Attempt 2 (the worker's retry, as after a lease expiry).
	if _, err := e.store.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	final := e.work(t, newPipeline(client), j.ID, time.Minute)
	if final.State != jobs.StateSucceeded || final.Attempt != 2 {
		t.Fatalf("retry: %s attempt %d: %s\n%s", final.State, final.Attempt, final.Reason, stepStates(final))
	}
	var second []string
	for _, st := range final.Steps {
		if st.Attempt == 2 {
			second = append(second, st.Name+"="+st.State)
			t.Logf("attempt 2 %s %s: %s", st.Name, st.State, st.Detail)
		}
	}
	if got := strings.Join(second, " "); got != "snapshot=skipped train=skipped evaluate=skipped gate=skipped track=succeeded publish=succeeded confirm=succeeded" {
		t.Errorf("attempt 2 steps = %s", got)
	}

	// One new version, tagged with the job and the champion it beat, READY,
	// with the alias; its card names its registry number.
	if nums := pipelinetest.Versions(t, client, model); strings.Join(nums, ",") != "1,2" {
		t.Fatalf("registry versions %v, want 1,2", nums)
	}
	v2, err := client.GetModelVersion(ctx, model, "2")
	if err != nil || v2.Tags[pipeline.TagJobID] != j.ID || v2.Tags[pipeline.TagChampionVersion] != "1" || v2.Status != pipeline.StatusReady {
		t.Fatalf("version 2 = %+v, %v", v2, err)
	}
	if mv, err := client.GetModelVersionByAlias(ctx, model, pipeline.ChampionAlias); err != nil || mv.Version != "2" {
		t.Fatalf("alias on %+v, %v; want version 2", mv, err)
	}
	rc, err := client.OpenArtifact(ctx, v2.RunID, "model/"+modelrepo.CardFile)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	var card modelrepo.Card
	if err := json.Unmarshal(b, &card); err != nil || card.Version != 2 || card.Training.RegistryVersion != "2" || card.Training.RunID != v2.RunID {
		t.Errorf("card of version 2: version %d registry %q run %q (%v)", card.Version, card.Training.RegistryVersion, card.Training.RunID, err)
	}
	if final.Result["version"] != 2.0 || final.Result["registered_version"] != "2" {
		t.Errorf("result %v", final.Result)
	}
	if r, err := client.GetRun(ctx, v2.RunID); err != nil || r.Info.Status != tracker.StatusFinished {
		t.Errorf("the run of the promoted version: %+v %v, want FINISHED", r.Info, err)
	}

	// A concurrent registration of the same job (a trainer stalled past its
	// lease registering at the same time): the lower version stays, the
	// duplicate is deleted, the alias moves once.
	t.Run("concurrent registration", func(t *testing.T) {
		race := &rivalRegistry{Client: client, sameJob: true}
		j, reg := runRegistryJob(t, client, race, 16)
		if j.State != jobs.StateSucceeded {
			t.Fatalf("%s: %s\n%s", j.State, j.Reason, stepStates(j))
		}
		if race.rival == "" || race.ours == "" || reg[race.ours] || !reg[race.rival] {
			t.Fatalf("rival %q, ours %q; registry %v: want the rival kept and ours deleted", race.rival, race.ours, reg)
		}
		if mv, err := client.GetModelVersionByAlias(ctx, model, pipeline.ChampionAlias); err != nil || mv.Version != race.rival {
			t.Errorf("alias on %+v %v, want the kept version %s", mv, err, race.rival)
		}
		if !strings.Contains(j.Steps[4].Log, "registered concurrently; deleting version "+race.ours) {
			t.Errorf("track log %q", j.Steps[4].Log)
		}
	})
	// Another job promoted while this one ran: the alias no longer names the
	// champion this candidate beat, so it is not moved over it.
	t.Run("alias moved meanwhile", func(t *testing.T) {
		other := &rivalRegistry{Client: client}
		j, _ := runRegistryJob(t, client, other, 24)
		if j.State != jobs.StateRejected || !strings.Contains(j.Reason, "alias champion moved to version "+other.rival) {
			t.Fatalf("%s: %s\n%s", j.State, j.Reason, stepStates(j))
		}
		if mv, err := client.GetModelVersionByAlias(ctx, model, pipeline.ChampionAlias); err != nil || mv.Version != other.rival {
			t.Errorf("alias on %+v %v, want the other job's version %s", mv, err, other.rival)
		}
	})
}

// rivalRegistry registers a rival version from the same run just before
// the pipeline's own registration: tagged with the same job (sameJob: a
// concurrent attempt) or untagged and given the alias (another job's
// promotion).
type rivalRegistry struct {
	*mlflow.Client
	sameJob     bool
	rival, ours string
}

func (r *rivalRegistry) CreateTaggedModelVersion(ctx context.Context, name, runID, path string, tags map[string]string) (tracker.ModelVersion, error) {
	rtags := map[string]string{}
	if r.sameJob {
		rtags = tags
	}
	rival, err := r.Client.CreateTaggedModelVersion(ctx, name, runID, path, rtags)
	if err != nil {
		return rival, err
	}
	r.rival = rival.Version
	if !r.sameJob {
		if err := r.Client.SetAlias(ctx, name, pipeline.ChampionAlias, rival.Version); err != nil {
			return rival, err
		}
	}
	mv, err := r.Client.CreateTaggedModelVersion(ctx, name, runID, path, tags)
	r.ours = mv.Version
	return mv, err
}

// runRegistryJob runs one job in registry mode against the registry's
// current champion, with labels shifted by shift (far enough from the
// champion's for the gate to pass), and returns it with the registry's
// versions after it.
func runRegistryJob(t *testing.T, client *mlflow.Client, reg pipeline.Registry, shift float64) (jobs.Job, map[string]bool) {
	t.Helper()
	e := newEnv(t, 4)
	e.serve.AddFeedback(pipelinetest.Feedback(model, baseDays, 120, shift)...)
	cfg := e.cfg
	cfg.ModelsDir = ""
	p, err := pipeline.New(pipeline.Options{Config: cfg, Base: pipeline.CSVBase{Path: filepath.Join(e.dir, "base.csv"), Target: pipelinetest.Target},
		Feedback: e.feedback, Trainer: e.trainer, Predictor: pipeline.ONNXPredictor{}, Tracker: client, TrackerKind: "mlflow",
		Serving: aliasServing{client}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	j, _, err := e.store.Enqueue(context.Background(), jobs.Request{Model: model, Trigger: jobs.TriggerAlert, GroupKey: "g", Alerts: []string{"FeatureDrift"}})
	if err != nil {
		t.Fatal(err)
	}
	j = e.work(t, p, j.ID, time.Minute)
	vs, err := client.SearchModelVersions(context.Background(), "name='"+model+"'")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, v := range vs {
		got[v.Version] = true
	}
	return j, got
}
