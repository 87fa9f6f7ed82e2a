package sqlite_test

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

	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/sqlite"
)

const childEnv = "FLYWHEEL_TRACKER_SQLITE_CHILD"

// TestMain doubles as the child process of TestConcurrentProcesses.
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

const (
	childSteps = 400
	childKeys  = 2
)

// child logs one run with many small transactions into the shared database.
func child(spec string) error {
	db, worker, _ := strings.Cut(spec, "|")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := sqlite.Open(ctx, sqlite.Options{Config: sqlite.Config{Path: db, BusyTimeout: 30 * time.Second}})
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

func open(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), sqlite.Options{Config: sqlite.Config{Path: filepath.Join(t.TempDir(), "var", "tracking.db")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConcurrentProcesses(t *testing.T) {
	const workers = 4
	db := filepath.Join(t.TempDir(), "tracking.db")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmds := make([]*exec.Cmd, workers)
	outs := make([]*bytes.Buffer, workers)
	for i := range cmds {
		cmds[i] = exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmds[i].Env = append(os.Environ(), fmt.Sprintf("%s=%s|%d", childEnv, db, i))
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
	s, err := sqlite.Open(ctx, sqlite.Options{Config: sqlite.Config{Path: db}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
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

func TestStore(t *testing.T) {
	ctx := context.Background()
	s := open(t)
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
	if err := s.LogBatch(ctx, run.ID(), []tracker.Metric{{Key: "n", Value: math.NaN(), Timestamp: 1}, {Key: "i", Value: math.Inf(1), Timestamp: 1}}, nil, []tracker.Tag{{Key: "team", Value: "a"}, {Key: "team", Value: "b"}}); err != nil {
		t.Fatal(err)
	}
	mv, err := run.Finish(ctx, tracker.Result{
		Datasets:  []tracker.Dataset{{Name: "d", Digest: "sha256:1", SourceType: "local", Source: "x", Context: "training"}},
		Model:     "m",
		ModelPath: "model",
		Alias:     "champion",
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.GetRun(ctx, run.ID())
	if err != nil {
		t.Fatal(err)
	}
	if r.Params["lr"] != "0.1" || r.Metrics["rmse"].Value != 1 || r.Metrics["rmse"].Step != 2 || r.Tags["team"] != "b" ||
		r.Tags[tracker.TagUser] != "me" || r.Tags[tracker.TagGitCommit] != "c0ffee" || r.Info.Status != tracker.StatusFinished || len(r.Datasets) != 1 {
		t.Errorf("run %+v", r)
	}
	if !math.IsNaN(r.Metrics["n"].Value) || !math.IsInf(r.Metrics["i"].Value, 1) {
		t.Errorf("NaN/Inf: %v %v", r.Metrics["n"], r.Metrics["i"])
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
		{"unknown run", s.LogBatch(ctx, "nope", nil, []tracker.Param{{Key: "a", Value: "b"}}, nil), tracker.ErrNotFound},
		{"bad status", s.EndRun(ctx, run.ID(), "DONE", time.Time{}), tracker.ErrInvalid},
		{"escape artifact dir", s.LogArtifact(ctx, run.ID(), "../../x", strings.NewReader("x")), nil},
		{"unknown alias", func() error { _, err := s.GetModelVersionByAlias(ctx, "m", "nope"); return err }(), tracker.ErrNotFound},
		{"version of unknown model", func() error { _, err := s.CreateModelVersion(ctx, "nope", run.ID(), "x"); return err }(), tracker.ErrNotFound},
	}
	for _, tc := range tests {
		if tc.want == nil && tc.err != nil || tc.want != nil && !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	// "../../x" is cleaned into the run's own directory.
	if _, err := s.OpenArtifact(ctx, run.ID(), "x"); err != nil {
		t.Errorf("cleaned artifact path: %v", err)
	}
	filtered, err := s.SearchRuns(ctx, tracker.SearchQuery{Filter: "metrics.rmse <= 1 and params.lr = '0.1' and tags.team = 'b'"})
	if err != nil || len(filtered) != 1 {
		t.Errorf("search: %d %v", len(filtered), err)
	}
	none, _ := s.SearchRuns(ctx, tracker.SearchQuery{Filter: "metrics.rmse > 1"})
	if len(none) != 0 {
		t.Errorf("search matched %d", len(none))
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "t.db")
	for i := 0; i < 2; i++ {
		s, err := sqlite.Open(ctx, sqlite.Options{Config: sqlite.Config{Path: path}})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(path), "t-artifacts")); err != nil {
		t.Errorf("artifact dir beside the database: %v", err)
	}
}

// TestStepErrorFailsRun: an error in a progress callback surfaces in Finish
// and the run ends FAILED.
func TestStepErrorFailsRun(t *testing.T) {
	ctx := context.Background()
	s := open(t)
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

// TestSetRemoteIDIf: a replay records its MLflow id only over the id it read,
// so the id StartRun handed out keeps resolving.
func TestSetRemoteIDIf(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	exp, err := s.GetOrCreateExperiment(ctx, "exp")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.StartRun(ctx, exp.ID, tracker.RunOptions{Name: "r"})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		old, id string
		want    bool
	}{
		{"", "remote-a", true},         // first id
		{"", "remote-b", false},        // read before remote-a was set: refused
		{"remote-a", "remote-b", true}, // over the id it read
	}
	for _, st := range steps {
		ok, err := s.SetRemoteIDIf(ctx, info.ID, st.old, st.id)
		if err != nil || ok != st.want {
			t.Fatalf("SetRemoteIDIf(%q → %q) = %v, %v; want %v", st.old, st.id, ok, err, st.want)
		}
	}
	if got, err := s.Resolve(ctx, "remote-b"); err != nil || got != info.ID {
		t.Fatalf("Resolve(remote-b) = %q, %v; want %q", got, err, info.ID)
	}
}
