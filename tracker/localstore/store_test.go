package localstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/database"
	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/localstore"
)

const childEnv = "FLYWHEEL_TRACKER_STORE_CHILD"

// TestMain doubles as the child process of the concurrent-processes case.
func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		if err := child(spec); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestStoreContract runs the store's one contract suite against both
// backends: SQLite files and databases on a real PostgreSQL server.
func TestStoreContract(t *testing.T) {
	harness.RunContract(t, storeContract{})
}

// storeContract is the contract suite of the tracker's local store: each
// exported method Test<Name> is a case, run against every backend.
type storeContract struct{}

// open opens the store at url with its artifacts in dir ("" = a new
// temporary directory).
func open(t testing.TB, url, dir string) *localstore.Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := localstore.Open(context.Background(), localstore.Options{Config: localstore.Config{URL: url, ArtifactDir: dir}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (storeContract) TestRunParamsMetricsTags(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	s := open(t, newURL(t), "")
	run, err := tracker.Start(ctx, s, "exp", tracker.RunOptions{Name: "r", Source: tracker.Source{User: "me", GitCommit: "c0ffee"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := run.LogParams(ctx, map[string]string{"lr": "0.1"}); err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 3; i++ {
		if err := run.LogMetrics(ctx, i, map[string]float64{"rmse": 3 - float64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.LogBatch(ctx, run.ID(), []tracker.Metric{{Key: "n", Value: math.NaN(), Timestamp: 1}, {Key: "i", Value: math.Inf(1), Timestamp: 1}, {Key: "ni", Value: math.Inf(-1), Timestamp: 1}},
		nil, []tracker.Tag{{Key: "team", Value: "a"}, {Key: "team", Value: "b"}}); err != nil {
		t.Fatal(err)
	}
	datasets := []tracker.Dataset{
		{Name: "d", Digest: "sha256:1", SourceType: "local", Source: "x", Schema: `{"a":1}`, Profile: `{"num_rows":3}`, Context: "training"},
		{Name: "d", Digest: "sha256:1", SourceType: "local", Source: "x", Context: "evaluation"},
	}
	mv, err := run.Finish(ctx, tracker.Result{Datasets: datasets, Model: "m", ModelPath: "model", Alias: "champion"})
	if err != nil {
		t.Fatal(err)
	}
	// The same dataset again is not a second input.
	if err := s.LogInputs(ctx, run.ID(), datasets[:1]); err != nil {
		t.Fatal(err)
	}
	r, err := s.GetRun(ctx, run.ID())
	if err != nil {
		t.Fatal(err)
	}
	if r.Params["lr"] != "0.1" || r.Metrics["rmse"].Value != 1 || r.Metrics["rmse"].Step != 2 || r.Tags["team"] != "b" ||
		r.Tags[tracker.TagUser] != "me" || r.Tags[tracker.TagGitCommit] != "c0ffee" || r.Info.Status != tracker.StatusFinished || r.Info.EndTime == 0 {
		t.Errorf("run %+v", r)
	}
	if fmt.Sprint(r.Datasets) != fmt.Sprint(datasets) {
		t.Errorf("datasets %v, want %v", r.Datasets, datasets)
	}
	if !math.IsNaN(r.Metrics["n"].Value) || !math.IsInf(r.Metrics["i"].Value, 1) || !math.IsInf(r.Metrics["ni"].Value, -1) {
		t.Errorf("NaN/Inf: %v %v %v", r.Metrics["n"], r.Metrics["i"], r.Metrics["ni"])
	}
	got, err := s.GetModelVersionByAlias(ctx, "m", "champion")
	if err != nil || got.Version != mv.Version || got.RunID != run.ID() {
		t.Errorf("alias → %+v %v", got, err)
	}
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"param change", s.LogBatch(ctx, run.ID(), nil, []tracker.Param{{Key: "lr", Value: "0.2"}}, nil), tracker.ErrInvalid},
		{"same param", s.LogBatch(ctx, run.ID(), nil, []tracker.Param{{Key: "lr", Value: "0.1"}}, nil), nil},
		{"bad key", s.LogBatch(ctx, run.ID(), []tracker.Metric{{Key: "a*b"}}, nil, nil), tracker.ErrInvalid},
		{"param too long", s.LogBatch(ctx, run.ID(), nil, []tracker.Param{{Key: "big", Value: strings.Repeat("x", tracker.MaxParamValueLength+1)}}, nil), tracker.ErrInvalid},
		{"unknown run", s.LogBatch(ctx, "nope", nil, []tracker.Param{{Key: "a", Value: "b"}}, nil), tracker.ErrNotFound},
		{"bad status", s.EndRun(ctx, run.ID(), "DONE", time.Time{}), tracker.ErrInvalid},
		{"unknown experiment", func() error { _, err := s.StartRun(ctx, "999", tracker.RunOptions{}); return err }(), tracker.ErrNotFound},
		{"malformed experiment id", func() error { _, err := s.StartRun(ctx, "x", tracker.RunOptions{}); return err }(), tracker.ErrNotFound},
		{"empty experiment name", func() error { _, err := s.GetOrCreateExperiment(ctx, ""); return err }(), tracker.ErrInvalid},
		{"unknown run's history", func() error { _, err := s.MetricHistory(ctx, "nope", "rmse"); return err }(), tracker.ErrNotFound},
	}
	for _, tc := range tests {
		if tc.want == nil && tc.err != nil || tc.want != nil && !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if r2, _ := s.GetRun(ctx, run.ID()); r2.Params["lr"] != "0.1" || len(r2.Params) != 1 {
		t.Errorf("a rejected batch changed the params: %v", r2.Params)
	}
	e1, err := s.GetOrCreateExperiment(ctx, "exp")
	if err != nil || e1.ID != r.Info.ExperimentID {
		t.Errorf("experiment created twice: %+v (run's %s) %v", e1, r.Info.ExperimentID, err)
	}
	if name, err := s.ExperimentName(ctx, e1.ID); err != nil || name != "exp" {
		t.Errorf("ExperimentName = %q, %v", name, err)
	}
}

// newRun starts a run of experiment "exp" on the store alone.
func newRun(t testing.TB, s *localstore.Store, name string) tracker.RunInfo {
	t.Helper()
	ctx := context.Background()
	exp, err := s.GetOrCreateExperiment(ctx, "exp")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.StartRun(ctx, exp.ID, tracker.RunOptions{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func (storeContract) TestMetricHistory(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	s := open(t, newURL(t), "")
	info := newRun(t, s, "")
	if !strings.HasPrefix(info.Name, "run-") {
		t.Errorf("generated name %q", info.Name)
	}
	// Logged out of step order, with a repeated step and timestamps: the
	// history keeps logging order; the latest value is the largest step,
	// then the latest timestamp.
	want := []tracker.Metric{
		{Key: "loss", Value: 3, Timestamp: 10, Step: 0},
		{Key: "loss", Value: 1, Timestamp: 30, Step: 2},
		{Key: "loss", Value: 2, Timestamp: 20, Step: 1},
		{Key: "loss", Value: 0.5, Timestamp: 40, Step: 2},
		{Key: "loss", Value: math.NaN(), Timestamp: 50, Step: 1},
	}
	for _, m := range want {
		if err := s.LogBatch(ctx, info.ID, []tracker.Metric{m, {Key: "other", Value: 9, Timestamp: m.Timestamp}}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	h, err := s.MetricHistory(ctx, info.ID, "loss")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(h) != fmt.Sprint(want) {
		t.Errorf("history %v, want %v", h, want)
	}
	all, err := s.Metrics(ctx, info.ID)
	if err != nil || len(all) != 2*len(want) {
		t.Errorf("Metrics: %d values, %v", len(all), err)
	}
	r, _ := s.GetRun(ctx, info.ID)
	if m := r.Metrics["loss"]; m.Value != 0.5 || m.Step != 2 {
		t.Errorf("latest loss %+v", m)
	}
}

func (storeContract) TestSearch(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	s := open(t, newURL(t), "")
	start := time.UnixMilli(1_700_000_000_000)
	ids := map[string]string{}
	for i, exp := range []string{"a", "a", "a", "b", "b"} {
		name := fmt.Sprintf("%s%d", exp, i)
		run, err := tracker.Start(ctx, s, exp, tracker.RunOptions{Name: name, StartTime: start.Add(time.Duration(i) * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = run.ID()
		algo := "gbdt"
		if i%2 == 1 {
			algo = "ridge"
		}
		if _, err := run.Finish(ctx, tracker.Result{Params: map[string]string{"algorithm": algo}, Metrics: map[string]float64{"mae": float64(10 - i)}}); err != nil {
			t.Fatal(err)
		}
	}
	expA, _ := s.GetExperimentByName(ctx, "a")
	expB, _ := s.GetExperimentByName(ctx, "b")
	names := func(runs []tracker.Run) string {
		var out []string
		for _, r := range runs {
			out = append(out, r.Info.Name)
		}
		return strings.Join(out, ",")
	}
	tests := []struct {
		name string
		q    tracker.SearchQuery
		want string
	}{
		{"all, newest first", tracker.SearchQuery{}, "b4,b3,a2,a1,a0"},
		{"one experiment", tracker.SearchQuery{ExperimentIDs: []string{expA.ID}}, "a2,a1,a0"},
		{"both experiments", tracker.SearchQuery{ExperimentIDs: []string{expB.ID, expA.ID}}, "b4,b3,a2,a1,a0"},
		{"unknown experiment id", tracker.SearchQuery{ExperimentIDs: []string{"x"}}, ""},
		{"filter", tracker.SearchQuery{Filter: "params.algorithm = 'gbdt' and metrics.mae < 10"}, "b4,a2"},
		{"like", tracker.SearchQuery{Filter: "attributes.run_name LIKE 'a%'"}, "a2,a1,a0"},
		{"order by metric", tracker.SearchQuery{OrderBy: []string{"metrics.mae ASC"}}, "b4,b3,a2,a1,a0"},
		{"order by metric desc, max 2", tracker.SearchQuery{OrderBy: []string{"metrics.mae DESC"}, MaxResults: 2}, "a0,a1"},
		{"paged by 1, max 3", tracker.SearchQuery{MaxResults: 3, PageSize: 1}, "b4,b3,a2"},
		{"no match", tracker.SearchQuery{Filter: "metrics.mae > 100"}, ""},
	}
	for _, tc := range tests {
		got, err := s.SearchRuns(ctx, tc.q)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if names(got) != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, names(got), tc.want)
		}
	}
	if _, err := s.SearchRuns(ctx, tracker.SearchQuery{Filter: "metrics.mae <<< 1"}); !errors.Is(err, tracker.ErrInvalid) {
		t.Errorf("bad filter: %v", err)
	}
	lrs, err := s.SearchLocalRuns(ctx, tracker.SearchQuery{Filter: "attributes.run_name = 'b3'"})
	if err != nil || len(lrs) != 1 || lrs[0].ExperimentName != "b" || lrs[0].Info.ID != ids["b3"] || lrs[0].Rev == 0 {
		t.Errorf("SearchLocalRuns: %+v %v", lrs, err)
	}
}

func (storeContract) TestArtifacts(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, newURL(t), dir)
	run, err := tracker.Start(ctx, s, "exp", tracker.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"model/model.onnx": "onnx", "model/sub/x.bin": "\x00\x01", "report with space.json": "{}", "../../escape": "e"}
	for p, c := range files {
		if err := s.LogArtifact(ctx, run.ID(), p, strings.NewReader(c)); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	if err := s.LogArtifact(ctx, run.ID(), "model/model.onnx", strings.NewReader("onnx v2")); err != nil {
		t.Fatal(err)
	}
	all, err := s.AllArtifacts(ctx, run.ID())
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(all); got != "[{escape false 1} {model/model.onnx false 7} {model/sub/x.bin false 2} {report with space.json false 2}]" {
		t.Errorf("all artifacts %s", got)
	}
	top, err := s.ListArtifacts(ctx, run.ID(), "")
	if err != nil || fmt.Sprint(top) != "[{escape false 1} {model true 0} {report with space.json false 2}]" {
		t.Errorf("top level %v %v", top, err)
	}
	sub, err := s.ListArtifacts(ctx, run.ID(), "model/")
	if err != nil || fmt.Sprint(sub) != "[{model/model.onnx false 7} {model/sub true 0}]" {
		t.Errorf("model/ %v %v", sub, err)
	}
	rc, err := s.OpenArtifact(ctx, run.ID(), "model/model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "onnx v2" {
		t.Errorf("artifact %q", b)
	}
	if s.Dialect() == database.SQLite {
		if _, err := os.Stat(filepath.Join(dir, run.ID(), "escape")); err != nil {
			t.Errorf("\"../../escape\" is not inside the run's directory: %v", err)
		}
	} else if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a PostgreSQL store wrote artifact files: %v", entries)
	}
	for name, err := range map[string]error{
		"missing file":       func() error { _, err := s.OpenArtifact(ctx, run.ID(), "nope"); return err }(),
		"unknown run":        func() error { _, err := s.OpenArtifact(ctx, "nope", "x"); return err }(),
		"log to unknown run": s.LogArtifact(ctx, "nope", "x", strings.NewReader("x")),
		"list unknown run":   func() error { _, err := s.ListArtifacts(ctx, "nope", ""); return err }(),
	} {
		if !errors.Is(err, tracker.ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", name, err)
		}
	}
	if err := s.LogArtifact(ctx, run.ID(), "/", strings.NewReader("x")); !errors.Is(err, tracker.ErrInvalid) {
		t.Errorf("empty path: %v", err)
	}
}

func (storeContract) TestRegistry(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	s := open(t, newURL(t), "")
	run, err := tracker.Start(ctx, s, "exp", tracker.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateModelVersion(ctx, "m", run.ID(), "model"); !errors.Is(err, tracker.ErrNotFound) {
		t.Errorf("version of an unregistered model: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := s.CreateRegisteredModel(ctx, "m"); err != nil {
			t.Fatalf("registering twice: %v", err)
		}
	}
	var versions []string
	for i := 0; i < 3; i++ {
		mv, err := s.CreateModelVersion(ctx, "m", run.ID(), "/model/")
		if err != nil {
			t.Fatal(err)
		}
		versions = append(versions, mv.Version)
		if !strings.HasSuffix(mv.Source, "/"+run.ID()+"/model") || mv.RunID != run.ID() {
			t.Errorf("version %+v", mv)
		}
	}
	if strings.Join(versions, ",") != "1,2,3" {
		t.Errorf("versions %v", versions)
	}
	for _, step := range []struct{ alias, version string }{{"champion", "1"}, {"challenger", "3"}, {"champion", "2"}} {
		if err := s.SetAlias(ctx, "m", step.alias, step.version); err != nil {
			t.Fatal(err)
		}
	}
	if mv, err := s.GetModelVersionByAlias(ctx, "m", "champion"); err != nil || mv.Version != "2" || fmt.Sprint(mv.Aliases) != "[champion]" {
		t.Errorf("champion → %+v %v", mv, err)
	}
	ann := tracker.VersionAnnotation{Description: "the gbdt", Tags: map[string]string{"algorithm": "gbdt", "test_mae": "1.5"}}
	if err := s.AnnotateModelVersion(ctx, "m", "2", ann); err != nil {
		t.Fatal(err)
	}
	if err := s.AnnotateModelVersion(ctx, "m", "2", tracker.VersionAnnotation{Tags: map[string]string{"test_mae": "1.4"}}); err != nil {
		t.Fatal(err)
	}
	lvs, err := s.ModelVersionsOfRun(ctx, run.ID())
	if err != nil || len(lvs) != 3 {
		t.Fatalf("versions of the run: %v %v", lvs, err)
	}
	if v := lvs[1]; v.Description != "the gbdt" || v.Tags["algorithm"] != "gbdt" || v.Tags["test_mae"] != "1.4" || v.ArtifactPath != "model" {
		t.Errorf("annotated version %+v", v)
	}
	if lv, err := s.ModelVersion(ctx, "m", "3"); err != nil || fmt.Sprint(lv.Aliases) != "[challenger]" {
		t.Errorf("version 3 %+v %v", lv, err)
	}
	for name, tc := range map[string]struct{ err, want error }{
		"unknown alias":          {func() error { _, err := s.GetModelVersionByAlias(ctx, "m", "nope"); return err }(), tracker.ErrNotFound},
		"alias on a missing one": {s.SetAlias(ctx, "m", "x", "9"), tracker.ErrNotFound},
		"alias on version 0":     {s.SetAlias(ctx, "m", "x", "0"), tracker.ErrInvalid},
		"annotate missing":       {s.AnnotateModelVersion(ctx, "m", "9", ann), tracker.ErrNotFound},
		"annotate bad tag":       {s.AnnotateModelVersion(ctx, "m", "1", tracker.VersionAnnotation{Tags: map[string]string{"a*": "b"}}), tracker.ErrInvalid},
		"empty model name":       {s.CreateRegisteredModel(ctx, ""), tracker.ErrInvalid},
		"unknown run":            {func() error { _, err := s.CreateModelVersion(ctx, "m", "nope", "x"); return err }(), tracker.ErrNotFound},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", name, tc.err, tc.want)
		}
	}
}

// TestStepErrorFailsRun: an error in a progress callback surfaces in Finish
// and the run ends FAILED.
func (storeContract) TestStepErrorFailsRun(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	s := open(t, newURL(t), "")
	run, err := tracker.Start(ctx, s, "exp", tracker.RunOptions{Name: "r"})
	if err != nil {
		t.Fatal(err)
	}
	run.Step(ctx, 1, map[string]float64{"ok": 1})
	run.Step(ctx, 2, map[string]float64{"bad*key": 1})
	run.Step(ctx, 3, map[string]float64{"ok": 3})
	if _, err := run.Finish(ctx, tracker.Result{}); !errors.Is(err, tracker.ErrInvalid) {
		t.Fatalf("Finish: %v, want ErrInvalid", err)
	}
	r, _ := s.GetRun(ctx, run.ID())
	if r.Info.Status != tracker.StatusFailed || r.Metrics["ok"].Step != 1 {
		t.Errorf("run %+v", r.Info)
	}
}

// TestOutboxStates walks a run through the outbox: starting, mirrored,
// unsynced, synced, and unsynced again after a late write; a replay
// records its MLflow id only over the id it read.
func (storeContract) TestOutboxStates(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	s := open(t, newURL(t), "")
	o := s.Outbox()
	plain := newRun(t, s, "plain")
	id := localstore.NewRunID()
	if _, err := s.StartRunWithID(ctx, plain.ExperimentID, id, localstore.StateStarting, tracker.RunOptions{Name: "tracked"}); err != nil {
		t.Fatal(err)
	}
	state := func(id string) string {
		t.Helper()
		r, err := o.Run(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return r.State
	}
	pending := func(all bool, stale time.Time) string {
		t.Helper()
		ids, err := o.Pending(ctx, all, stale)
		if err != nil {
			t.Fatal(err)
		}
		return strings.NewReplacer(plain.ID, "plain", id, "tracked").Replace(strings.Join(ids, ","))
	}
	past, future := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	if st := state(plain.ID); st != localstore.StateLocal {
		t.Errorf("a run of the store alone: %s", st)
	}
	if st := state(id); st != localstore.StateStarting {
		t.Errorf("started: %s", st)
	}
	// A fresh start is nobody's to replay, not even with --all; a stale one is.
	if p := pending(false, past); p != "" {
		t.Errorf("pending while starting: %q", p)
	}
	if p := pending(true, past); p != "plain" {
		t.Errorf("pending --all while starting: %q", p)
	}
	if p := pending(false, future); p != "tracked" {
		t.Errorf("pending with the start stale: %q", p)
	}
	if ok, err := o.Started(ctx, id, "remote-a"); err != nil || !ok {
		t.Fatalf("Started: %v %v", ok, err)
	}
	if ok, _ := o.Started(ctx, id, "remote-x"); ok {
		t.Error("Started twice")
	}
	if st := state(id); st != localstore.StateMirrored {
		t.Errorf("after Started: %s", st)
	}
	if got, err := o.Resolve(ctx, "remote-a"); err != nil || got != id {
		t.Errorf("Resolve(remote-a) = %q %v", got, err)
	}
	if got, err := o.Resolve(ctx, id); err != nil || got != id {
		t.Errorf("Resolve(local) = %q %v", got, err)
	}
	if _, err := o.Resolve(ctx, "nope"); !errors.Is(err, tracker.ErrNotFound) {
		t.Errorf("Resolve(nope): %v", err)
	}
	if _, err := s.GetRun(ctx, "remote-a"); !errors.Is(err, tracker.ErrNotFound) {
		t.Errorf("the store alone resolved an MLflow id: %v", err)
	}
	if err := o.SetState(ctx, id, localstore.StateStarting, localstore.StateUnsynced); err != nil {
		t.Fatal(err)
	}
	if st := state(id); st != localstore.StateMirrored {
		t.Errorf("a guarded transition from another state applied: %s", st)
	}
	if err := o.SetState(ctx, id, "", localstore.StateUnsynced); err != nil {
		t.Fatal(err)
	}
	if p := pending(false, past); p != "tracked" {
		t.Errorf("pending: %q", p)
	}
	steps := []struct {
		old, id string
		want    bool
	}{
		{"", "remote-b", false},        // read before remote-a was set: refused
		{"remote-a", "remote-b", true}, // over the id it read
	}
	for _, st := range steps {
		ok, err := o.SetRemoteIDIf(ctx, id, st.old, st.id)
		if err != nil || ok != st.want {
			t.Fatalf("SetRemoteIDIf(%q → %q) = %v, %v; want %v", st.old, st.id, ok, err, st.want)
		}
	}
	// A run of the store alone gets an entry when it is replayed (--all).
	if ok, err := o.SetRemoteIDIf(ctx, plain.ID, "", "remote-p"); err != nil || !ok {
		t.Fatalf("first MLflow id of a local run: %v %v", ok, err)
	}
	lr, err := s.GetLocalRun(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.LogBatch(ctx, id, nil, nil, []tracker.Tag{{Key: "late", Value: "1"}}); err != nil {
		t.Fatal(err)
	}
	if ok, err := o.MarkSynced(ctx, id, lr.Rev); err != nil || ok {
		t.Fatalf("marked synced although written after the snapshot: %v %v", ok, err)
	}
	lr, _ = s.GetLocalRun(ctx, id)
	if ok, err := o.MarkSynced(ctx, id, lr.Rev); err != nil || !ok {
		t.Fatalf("MarkSynced: %v %v", ok, err)
	}
	if st := state(id); st != localstore.StateSynced {
		t.Errorf("after MarkSynced: %s", st)
	}
	if p := pending(false, past); p != "" {
		t.Errorf("pending after sync: %q", p)
	}
	if err := s.EndRun(ctx, id, tracker.StatusFinished, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if st := state(id); st != localstore.StateUnsynced {
		t.Errorf("a synced run written again: %s", st)
	}
	if ids, err := o.RunsInState(ctx, localstore.StateUnsynced); err != nil || len(ids) != 1 || ids[0] != id {
		t.Errorf("RunsInState(unsynced) = %v %v", ids, err)
	}
}

// TestOutboxRegistry: MLflow's version numbers and pending aliases.
func (storeContract) TestOutboxRegistry(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	s := open(t, newURL(t), "")
	o := s.Outbox()
	run, err := tracker.Start(ctx, s, "exp", tracker.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRegisteredModel(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := s.CreateModelVersion(ctx, "m", run.ID(), "model"); err != nil {
			t.Fatal(err)
		}
	}
	// MLflow numbered local version 2 as 7.
	if err := o.SetRemoteVersion(ctx, "m", "2", "7"); err != nil {
		t.Fatal(err)
	}
	if rv, err := o.RemoteVersion(ctx, "m", "1"); err != nil || rv != "" {
		t.Errorf("remote of version 1: %q %v", rv, err)
	}
	for _, tc := range []struct{ in, local, remote string }{{"7", "2", "7"}, {"2", "2", "7"}, {"1", "1", ""}} {
		lv, remote, err := o.LocalVersion(ctx, "m", tc.in)
		if err != nil || lv.Version != tc.local || remote != tc.remote {
			t.Errorf("LocalVersion(%s) = %s, %q, %v; want %s, %q", tc.in, lv.Version, remote, err, tc.local, tc.remote)
		}
	}
	if _, _, err := o.LocalVersion(ctx, "m", "9"); !errors.Is(err, tracker.ErrNotFound) {
		t.Errorf("LocalVersion(9): %v", err)
	}
	if err := o.SetAlias(ctx, "m", "champion", "1"); err != nil {
		t.Fatal(err)
	}
	if err := o.SetAlias(ctx, "m", "champion", "2"); err != nil {
		t.Fatal(err)
	}
	if err := o.SetAlias(ctx, "m", "old", "1"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAlias(ctx, "m", "old", "1"); err != nil { // set without MLflow: not pending
		t.Fatal(err)
	}
	p, err := o.PendingAliases(ctx)
	if err != nil || fmt.Sprint(p) != "[{m champion 2}]" {
		t.Fatalf("pending %v %v", p, err)
	}
	if mv, _ := s.GetModelVersionByAlias(ctx, "m", "champion"); mv.Version != "2" {
		t.Errorf("champion → %s", mv.Version)
	}
	// Replayed for version 1 while it moved to 2: still pending.
	if err := o.MarkAliasSynced(ctx, "m", "champion", "1"); err != nil {
		t.Fatal(err)
	}
	if p, _ := o.PendingAliases(ctx); len(p) != 1 {
		t.Errorf("pending after a stale mark: %v", p)
	}
	if err := o.MarkAliasSynced(ctx, "m", "champion", "2"); err != nil {
		t.Fatal(err)
	}
	if p, _ := o.PendingAliases(ctx); len(p) != 0 {
		t.Errorf("pending after sync: %v", p)
	}
}

// TestOutboxClaims: one sync at a time holds a run (with or without an
// outbox entry); a claim ends when released or expired.
func (storeContract) TestOutboxClaims(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	url := newURL(t)
	a := open(t, url, "").Outbox()
	b := open(t, url, "").Outbox() // another process
	s := open(t, url, "")
	plain := newRun(t, s, "plain")
	tracked := localstore.NewRunID()
	if _, err := s.StartRunWithID(ctx, plain.ExperimentID, tracked, localstore.StateUnsynced, tracker.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	soon, past := time.Now().Add(time.Minute), time.Now().Add(-time.Second)
	for _, id := range []string{plain.ID, tracked} {
		steps := []struct {
			name  string
			do    func() (bool, error)
			want  bool
			state string
		}{
			{"a claims", func() (bool, error) { return a.Claim(ctx, id, "a", soon) }, true, ""},
			{"b is refused", func() (bool, error) { return b.Claim(ctx, id, "b", soon) }, false, ""},
			{"a renews", func() (bool, error) { return a.Claim(ctx, id, "a", soon) }, true, ""},
			{"a releases, b claims", func() (bool, error) {
				if err := a.Release(ctx, id, "a"); err != nil {
					return false, err
				}
				return b.Claim(ctx, id, "b", past) // already expired
			}, true, ""},
			{"b's expired claim is taken", func() (bool, error) { return a.Claim(ctx, id, "a", soon) }, true, ""},
			{"b cannot release a's claim", func() (bool, error) {
				if err := b.Release(ctx, id, "b"); err != nil {
					return false, err
				}
				return b.Claim(ctx, id, "b", soon)
			}, false, ""},
		}
		for _, st := range steps {
			if got, err := st.do(); err != nil || got != st.want {
				t.Fatalf("%s: %s = %v, %v; want %v", id, st.name, got, err, st.want)
			}
		}
	}
	// Claims do not change what the runs are.
	for id, want := range map[string]string{plain.ID: localstore.StateLocal, tracked: localstore.StateUnsynced} {
		if r, err := a.Run(ctx, id); err != nil || r.State != want {
			t.Errorf("%s: %+v %v, want %s", id, r, err, want)
		}
	}
}

// TestReopen: opening an existing store again migrates nothing and keeps
// the runs; SQLite's artifacts default to a folder beside the file.
func (storeContract) TestReopen(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	url := newURL(t)
	dir := t.TempDir()
	var id string
	for i := 0; i < 3; i++ {
		s, err := localstore.Open(ctx, localstore.Options{Config: localstore.Config{URL: url, ArtifactDir: dir}})
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if i == 0 {
			run, err := tracker.Start(ctx, s, "exp", tracker.RunOptions{})
			if err != nil {
				t.Fatal(err)
			}
			id = run.ID()
		}
		if _, err := s.GetRun(ctx, id); err != nil {
			t.Errorf("open %d: %v", i, err)
		}
		s.Close()
	}
	if path := strings.TrimPrefix(url, "sqlite:"); !strings.HasPrefix(url, "postgres") {
		s, err := localstore.Open(ctx, localstore.Options{Config: localstore.Config{URL: path}})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
		if _, err := os.Stat(filepath.Join(filepath.Dir(path), base+"-artifacts")); err != nil {
			t.Errorf("artifact dir beside the database: %v", err)
		}
	}
}

const (
	childSteps = 400
	childKeys  = 2
)

// child logs one run with many small transactions into the shared store.
func child(spec string) error {
	parts := strings.Split(spec, "|")
	url, dir, worker := parts[0], parts[1], parts[2]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := localstore.Open(ctx, localstore.Options{Config: localstore.Config{URL: url, ArtifactDir: dir, BusyTimeout: 30 * time.Second}})
	if err != nil {
		return err
	}
	defer s.Close()
	run, err := tracker.Start(ctx, s, "shared", tracker.RunOptions{Name: "worker-" + worker})
	if err != nil {
		return err
	}
	if err := run.LogParams(ctx, map[string]string{"worker": worker}); err != nil {
		return err
	}
	for step := int64(0); step < childSteps; step++ {
		vals := map[string]float64{}
		for k := 0; k < childKeys; k++ {
			vals["m"+strconv.Itoa(k)] = float64(step)
		}
		if err := run.LogMetrics(ctx, step, vals); err != nil {
			return err
		}
	}
	if err := s.LogArtifact(ctx, run.ID(), "out/w.txt", strings.NewReader("worker "+worker)); err != nil {
		return err
	}
	if _, err := run.RegisterModel(ctx, "shared-model", "out", ""); err != nil {
		return err
	}
	return run.End(ctx, tracker.StatusFinished)
}

// TestConcurrentProcesses: four processes create the schema, the
// experiment and the registered model at once and log a run each; every
// value lands once, versions are numbered 1..4 once each.
func (storeContract) TestConcurrentProcesses(t *testing.T, newURL func(testing.TB) string) {
	const workers = 4
	url, dir := newURL(t), t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmds := make([]*exec.Cmd, workers)
	outs := make([]*bytes.Buffer, workers)
	for i := range cmds {
		cmds[i] = exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmds[i].Env = append(os.Environ(), fmt.Sprintf("%s=%s|%s|%d", childEnv, url, dir, i))
		outs[i] = &bytes.Buffer{}
		cmds[i].Stdout, cmds[i].Stderr = outs[i], outs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("worker %d: %v\n%s", i, err, outs[i])
		}
	}
	s := open(t, url, dir)
	runs, err := s.SearchRuns(ctx, tracker.SearchQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != workers {
		t.Fatalf("%d runs, want %d", len(runs), workers)
	}
	exps := map[string]bool{}
	var versions []string
	for _, r := range runs {
		exps[r.Info.ExperimentID] = true
		if r.Info.Status != tracker.StatusFinished || r.Params["worker"] == "" {
			t.Errorf("run %s: status %s, params %v", r.Info.ID, r.Info.Status, r.Params)
		}
		for k := 0; k < childKeys; k++ {
			h, err := s.MetricHistory(ctx, r.Info.ID, "m"+strconv.Itoa(k))
			if err != nil || len(h) != childSteps {
				t.Fatalf("run %s m%d: %d values, want %d (%v)", r.Info.ID, k, len(h), childSteps, err)
			}
			for i, m := range h {
				if m.Step != int64(i) || m.Value != float64(i) {
					t.Fatalf("history out of order at %d: %+v", i, m)
				}
			}
		}
		rc, err := s.OpenArtifact(ctx, r.Info.ID, "out/w.txt")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if string(b) != "worker "+r.Params["worker"] {
			t.Errorf("artifact %q", b)
		}
		lvs, _ := s.ModelVersionsOfRun(ctx, r.Info.ID)
		for _, v := range lvs {
			versions = append(versions, v.Version)
		}
	}
	if len(exps) != 1 {
		t.Errorf("experiment created %d times", len(exps))
	}
	sort.Strings(versions)
	if strings.Join(versions, ",") != "1,2,3,4" {
		t.Errorf("model versions %v, want 1..4 once each", versions)
	}
}
