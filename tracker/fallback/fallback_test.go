package fallback_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/fallback"
	"github.com/flywheel-ml/flywheel/tracker/localstore"
	"github.com/flywheel-ml/flywheel/tracker/mlflow"
	"github.com/flywheel-ml/flywheel/tracker/mlflowtest"
)

const testTimeout = time.Second // generous: a loaded CI machine must not time out healthy requests

type env struct {
	srv   *mlflowtest.Server
	store *localstore.Store
	tr    *fallback.Tracker
	dir   string
}

// TestFallbackContract runs the fallback's suite with its local store on
// both backends: SQLite files and databases on a real PostgreSQL server.
func TestFallbackContract(t *testing.T) {
	harness.RunContract(t, fallbackContract{})
}

// fallbackContract is the fallback tracker's contract suite: each exported
// method Test<Name> is a case, run with the local store on every backend.
type fallbackContract struct{}

// newEnv starts an MLflow imitation and a fallback tracker whose local
// store is the database at url.
func newEnv(t *testing.T, url string) *env {
	t.Helper()
	srv, err := mlflowtest.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	store := openStore(t, url, dir)
	tr := newTracker(t, srv, store, fallback.Options{})
	return &env{srv: srv, store: store, tr: tr, dir: dir}
}

func openStore(t *testing.T, url, dir string) *localstore.Store {
	t.Helper()
	store, err := localstore.Open(context.Background(), localstore.Options{Config: localstore.Config{URL: url, ArtifactDir: filepath.Join(dir, "artifacts")}})
	if err != nil {
		t.Fatal(err)
	}
	return store
}

// newTracker is a fallback tracker over store reaching srv (one process).
func newTracker(t *testing.T, srv *mlflowtest.Server, store *localstore.Store, opts fallback.Options) *fallback.Tracker {
	t.Helper()
	cfg := mlflow.DefaultConfig()
	cfg.TrackingURI = srv.URL
	cfg.Timeout = testTimeout
	cfg.RetryMax = 3
	cfg.RetryWaitMin = 5 * time.Millisecond
	cfg.RetryWaitMax = 20 * time.Millisecond
	cl, err := mlflow.New(mlflow.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	opts.Remote, opts.Local = cl, store
	tr, err := fallback.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

var testSource = tracker.Source{User: "ci", Name: "flywheel train", Type: "LOCAL", GitCommit: "abc123"}

// phase is a hook between steps of the workload.
type phase func(step string)

// workload logs a realistic training run: 150 params (two log-batch chunks),
// 40 iterations of 3 metrics incl. NaN and ±Inf, tags, a dataset, two
// artifacts (one 300 KiB), a model version and an alias.
func workload(t *testing.T, e *env, name string, hook phase) *tracker.ActiveRun {
	t.Helper()
	ctx := context.Background()
	if hook == nil {
		hook = func(string) {}
	}
	hook("start")
	run, err := tracker.Start(ctx, e.tr, "ridership", tracker.RunOptions{Name: name,
		Source: tracker.Source{User: "ci", Name: "flywheel train", Type: "LOCAL", GitCommit: "abc123"}, Tags: map[string]string{"team": "mlops"}})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	params := map[string]string{}
	for i := 0; i < 150; i++ {
		params[fmt.Sprintf("p%03d", i)] = fmt.Sprint(i * i)
	}
	hook("params")
	if err := run.LogParams(ctx, params); err != nil {
		t.Fatalf("params: %v", err)
	}
	for step := int64(0); step < 40; step++ {
		if step == 20 {
			hook("mid")
		}
		v := map[string]float64{"train_rmse": 10 / float64(step+1), "valid_rmse": 11 / float64(step+1)}
		switch step {
		case 3:
			v["odd"] = math.NaN()
		case 4:
			v["odd"] = math.Inf(1)
		case 5:
			v["odd"] = math.Inf(-1)
		}
		if err := run.Iteration(ctx, tracker.Iteration{Step: step, Metrics: v}); err != nil {
			t.Fatalf("iteration %d: %v", step, err)
		}
	}
	big := make([]byte, 300<<10)
	rand.Read(big)
	onnx := filepath.Join(e.dir, name+"-model.onnx")
	card := filepath.Join(e.dir, name+"-model.json")
	os.WriteFile(onnx, big, 0o644)
	os.WriteFile(card, []byte(`{"name":"ridership","run":"`+name+`"}`), 0o644)
	hook("finish")
	if _, err := run.Finish(ctx, tracker.Result{
		Params:    map[string]string{"algorithm": "gbdt"},
		Metrics:   map[string]float64{"test_mae": 1.25, "test_rmse": 1.75},
		FinalStep: 39,
		Datasets:  []tracker.Dataset{{Name: "chicago", Digest: "sha256:0123", SourceType: "local", Source: `{"uri":"data/chicago.csv"}`, Profile: `{"num_rows":3997}`, Context: "training"}},
		Artifacts: map[string]string{"model/model.onnx": onnx, "model/model.json": card},
		Model:     "ridership", ModelPath: "model", Alias: "champion",
	}); err != nil {
		t.Fatalf("finish: %v", err)
	}
	hook("done")
	return run
}

// verifyExact checks the server holds exactly what the local store holds:
// one MLflow run per local run, every param, tag, metric value (value, step,
// timestamp; nothing twice), dataset, artifact byte for byte, model version
// and alias.
func verifyExact(t *testing.T, e *env) {
	t.Helper()
	ctx := context.Background()
	locals, err := e.store.SearchLocalRuns(ctx, tracker.SearchQuery{})
	if err != nil {
		t.Fatal(err)
	}
	remote := e.srv.Runs()
	if len(remote) != len(locals) {
		t.Fatalf("server has %d runs, local store %d", len(remote), len(locals))
	}
	byLocal := map[string]mlflowtest.Run{}
	for _, r := range remote {
		id := r.Tags[tracker.TagLocalRunID]
		if _, dup := byLocal[id]; dup {
			t.Fatalf("two MLflow runs for local run %s", id)
		}
		byLocal[id] = r
	}
	for _, lr := range locals {
		r, ok := byLocal[lr.Info.ID]
		if !ok {
			t.Fatalf("local run %s missing in MLflow", lr.Info.ID)
		}
		ob, err := e.store.Outbox().Run(ctx, lr.Info.ID)
		if err != nil {
			t.Fatal(err)
		}
		if ob.State != localstore.StateSynced && ob.State != localstore.StateMirrored {
			t.Errorf("run %s: sync state %s", lr.Info.ID, ob.State)
		}
		if ob.RemoteID != r.Info.ID {
			t.Errorf("run %s: remote id %q recorded, MLflow has %q", lr.Info.ID, ob.RemoteID, r.Info.ID)
		}
		if r.Info.Status != lr.Info.Status || r.Info.EndTime != lr.Info.EndTime || r.Info.StartTime != lr.Info.StartTime || r.Info.Name != lr.Info.Name {
			t.Errorf("run info: MLflow %+v, local %+v", r.Info, lr.Info)
		}
		if !equalMaps(r.Params, lr.Params) {
			t.Errorf("params differ: MLflow %d, local %d", len(r.Params), len(lr.Params))
		}
		if !equalMaps(r.Tags, lr.Tags) {
			t.Errorf("tags differ:\nMLflow %v\nlocal  %v", r.Tags, lr.Tags)
		}
		for _, k := range []string{tracker.TagRunName, tracker.TagUser, tracker.TagSourceName, tracker.TagSourceType, tracker.TagGitCommit} {
			if r.Tags[k] == "" {
				t.Errorf("system tag %s missing", k)
			}
		}
		lm, err := e.store.Metrics(ctx, lr.Info.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := metricSet(r.Metrics), metricSet(lm); got != want {
			t.Errorf("metrics differ (%d in MLflow, %d local):\nMLflow %s\nlocal  %s", len(r.Metrics), len(lm), got, want)
		}
		if fmt.Sprint(r.Datasets) != fmt.Sprint(lr.Datasets) {
			t.Errorf("datasets: MLflow %v, local %v", r.Datasets, lr.Datasets)
		}
		arts := e.srv.Artifacts(r.Info.ID)
		files, _ := e.store.AllArtifacts(ctx, lr.Info.ID)
		if len(arts) != len(files) {
			t.Errorf("artifacts: MLflow %d, local %d", len(arts), len(files))
		}
		for _, f := range files {
			rc, err := e.store.OpenArtifact(ctx, lr.Info.ID, f.Path)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			b.ReadFrom(rc)
			rc.Close()
			if !bytes.Equal(arts[f.Path], b.Bytes()) {
				t.Errorf("artifact %s differs (%d vs %d bytes)", f.Path, len(arts[f.Path]), b.Len())
			}
		}
		lvs, _ := e.store.ModelVersionsOfRun(ctx, lr.Info.ID)
		for _, lv := range lvs {
			var found []tracker.ModelVersion
			for _, mv := range e.srv.ModelVersions(lv.Name) {
				if mv.RunID == r.Info.ID {
					found = append(found, mv)
				}
			}
			if len(found) != 1 {
				t.Fatalf("model %s: %d MLflow versions from run %s, want 1", lv.Name, len(found), r.Info.ID)
			}
			if rv, _ := e.store.Outbox().RemoteVersion(ctx, lv.Name, lv.Version); found[0].Version != rv || found[0].Source != r.Info.ArtifactURI+"/"+lv.ArtifactPath {
				t.Errorf("model version: MLflow %+v, local %+v", found[0], lv)
			}
			for _, a := range lv.Aliases {
				if got := e.srv.Alias(lv.Name, a); got != found[0].Version {
					t.Errorf("alias %s@%s → %q in MLflow, want %q", lv.Name, a, got, found[0].Version)
				}
			}
		}
	}
	var mvs int
	for _, lr := range locals {
		lvs, _ := e.store.ModelVersionsOfRun(ctx, lr.Info.ID)
		mvs += len(lvs)
	}
	if got := len(e.srv.ModelVersions("ridership")); got != mvs {
		t.Errorf("MLflow holds %d versions of ridership, local %d", got, mvs)
	}
	pending, _ := e.store.Outbox().PendingAliases(ctx)
	if len(pending) != 0 {
		t.Errorf("pending aliases after sync: %v", pending)
	}
}

// localID is the local id of a run the fallback named by its MLflow id.
func localID(t *testing.T, e *env, id string) string {
	t.Helper()
	local, err := e.store.Outbox().Resolve(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return local
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func metricSet(ms []tracker.Metric) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = fmt.Sprintf("%s@%d/%d=%v", m.Key, m.Step, m.Timestamp, m.Value)
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

// nth returns a fault for the n-th request matching path (1-based) in [from, to].
func nth(path string, from, to int, f mlflowtest.Fault) mlflowtest.FaultFunc {
	var mu sync.Mutex
	seen := 0
	return func(_ int, r *http.Request) mlflowtest.Fault {
		if !strings.HasSuffix(r.URL.Path, path) && !(path == "artifacts" && strings.Contains(r.URL.Path, "mlflow-artifacts")) {
			return mlflowtest.Fault{}
		}
		mu.Lock()
		defer mu.Unlock()
		seen++
		if seen >= from && seen <= to {
			return f
		}
		return mlflowtest.Fault{}
	}
}

func (fallbackContract) TestFaultScenarios(t *testing.T, newURL func(testing.TB) string) {
	slow := mlflowtest.Fault{Kind: mlflowtest.SlowAfter, Delay: 2 * testTimeout}
	tests := []struct {
		name string
		// fault is installed before the run; hook drives the server per phase.
		fault     mlflowtest.FaultFunc
		hook      func(e *env) phase
		wantLocal bool // the run fell back to SQLite
	}{
		{name: "healthy"},
		{name: "503 burst within retries", fault: nth("log-batch", 2, 4, mlflowtest.Fault{Kind: mlflowtest.Unavailable})},
		{name: "every third request 503 (within retries)", fault: func(n int, _ *http.Request) mlflowtest.Fault {
			if n%3 == 0 {
				return mlflowtest.Fault{Kind: mlflowtest.Unavailable}
			}
			return mlflowtest.Fault{}
		}},
		{name: "429 burst with Retry-After within retries", fault: nth("log-batch", 1, 3, mlflowtest.Fault{Kind: mlflowtest.TooManyRequests})},
		{name: "503 burst on artifact upload within retries", fault: nth("artifacts", 1, 2, mlflowtest.Fault{Kind: mlflowtest.Unavailable})},
		{name: "503 longer than the retries", fault: nth("log-batch", 5, 100, mlflowtest.Fault{Kind: mlflowtest.Unavailable}), wantLocal: true},
		{name: "slow log-batch beyond the timeout (applied, answer lost)", fault: nth("log-batch", 6, 6, slow), wantLocal: true},
		{name: "slow runs/create beyond the timeout (ghost run)", fault: nth("runs/create", 1, 1, slow), wantLocal: true},
		{name: "slow artifact upload beyond the timeout is retried", fault: nth("artifacts", 1, 1, slow)},
		{name: "connection reset before processing", fault: nth("log-batch", 3, 3, mlflowtest.Fault{Kind: mlflowtest.ResetBefore}), wantLocal: true},
		{name: "connection reset after processing runs/create", fault: nth("runs/create", 1, 1, mlflowtest.Fault{Kind: mlflowtest.ResetAfter}), wantLocal: true},
		{name: "connection reset after processing model-versions/create", fault: nth("model-versions/create", 1, 1, mlflowtest.Fault{Kind: mlflowtest.ResetAfter}), wantLocal: true},
		{name: "down for the whole run", hook: func(e *env) phase {
			return func(step string) {
				switch step {
				case "start":
					e.srv.Stop()
				case "done":
					if err := e.srv.Start(); err != nil {
						t.Fatal(err)
					}
				}
			}
		}, wantLocal: true},
		{name: "goes down mid-run", hook: func(e *env) phase {
			return func(step string) {
				switch step {
				case "mid":
					e.srv.Stop()
				case "done":
					if err := e.srv.Start(); err != nil {
						t.Fatal(err)
					}
				}
			}
		}, wantLocal: true},
		{name: "down mid-run and back before the run ends", hook: func(e *env) phase {
			return func(step string) {
				switch step {
				case "params":
					e.srv.Stop()
				case "mid":
					if err := e.srv.Start(); err != nil {
						t.Fatal(err)
					}
				}
			}
		}, wantLocal: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, newURL(t))
			e.srv.SetFault(tc.fault)
			var hook phase
			if tc.hook != nil {
				hook = tc.hook(e)
			}
			run := workload(t, e, "train-1", hook)
			e.srv.SetFault(nil)
			ctx := context.Background()
			lr, err := e.store.GetLocalRun(ctx, localID(t, e, run.ID()))
			if err != nil {
				t.Fatal(err)
			}
			ob, err := e.store.Outbox().Run(ctx, lr.Info.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got := ob.State == localstore.StateUnsynced; got != tc.wantLocal {
				t.Fatalf("run sync state %s, want unsynced=%v", ob.State, tc.wantLocal)
			}
			// Every run's full data is in SQLite regardless of MLflow.
			if len(lr.Params) != 151 || len(lr.Metrics) != 5 || len(lr.Datasets) != 1 {
				t.Fatalf("local run incomplete: %d params, %d metric keys, %d datasets", len(lr.Params), len(lr.Metrics), len(lr.Datasets))
			}
			rep, err := e.tr.Sync(ctx, fallback.SyncOptions{})
			if err != nil {
				t.Fatalf("sync: %v (%+v)", err, rep)
			}
			if tc.wantLocal && rep.Synced != 1 {
				t.Errorf("sync report %+v, want 1 run synced", rep)
			}
			verifyExact(t, e)
			// A second sync sends nothing and changes nothing.
			rep2, err := e.tr.Sync(ctx, fallback.SyncOptions{All: true})
			if err != nil {
				t.Fatal(err)
			}
			if rep2.Created+rep2.Params+rep2.Tags+rep2.Metrics+rep2.Datasets+rep2.Artifacts+rep2.ModelVersions+rep2.Aliases != 0 {
				t.Errorf("second sync sent data: %+v", rep2)
			}
			verifyExact(t, e)
		})
	}
}

// TestSyncKilledHalfway interrupts the sync at every point it talks to
// MLflow, then syncs again: the server ends with exactly the data.
func (fallbackContract) TestSyncKilledHalfway(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	for _, cut := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 24, 26, 28, 30} {
		t.Run(fmt.Sprintf("after %d requests", cut), func(t *testing.T) {
			e := newEnv(t, newURL(t))
			e.srv.Stop()
			workload(t, e, "train-a", nil)
			workload(t, e, "train-b", nil)
			if err := e.srv.Start(); err != nil {
				t.Fatal(err)
			}
			sctx, cancel := context.WithCancel(ctx)
			var n atomic.Int32
			e.srv.SetFault(func(_ int, _ *http.Request) mlflowtest.Fault {
				k := int(n.Add(1))
				if k == cut {
					cancel() // the process is killed while this request is in flight
					return mlflowtest.Fault{Kind: mlflowtest.ResetAfter}
				}
				return mlflowtest.Fault{}
			})
			_, err := e.tr.Sync(sctx, fallback.SyncOptions{})
			if err == nil {
				t.Fatalf("sync survived the kill at request %d", cut)
			}
			// The killed process's last request has landed (or not) before
			// the next sync starts.
			e.srv.Wait()
			e.srv.SetFault(nil)
			if _, err := e.tr.Sync(ctx, fallback.SyncOptions{}); err != nil {
				t.Fatalf("second sync: %v", err)
			}
			verifyExact(t, e)
		})
	}
}

// TestBackgroundSyncer replays a run logged while MLflow was down once it
// comes back, and stops with its context.
func (fallbackContract) TestBackgroundSyncer(t *testing.T, newURL func(testing.TB) string) {
	e := newEnv(t, newURL(t))
	e.srv.Stop()
	workload(t, e, "train-bg", nil)
	if err := e.srv.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	synced := make(chan struct{}, 1)
	s := &fallback.Syncer{Tracker: e.tr, Interval: 50 * time.Millisecond, OnSync: func(r fallback.SyncReport, err error) {
		if err == nil && r.Synced > 0 {
			select {
			case synced <- struct{}{}:
			default:
			}
		}
	}}
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-synced:
	case <-ctx.Done():
		t.Fatal("background syncer did not sync")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	verifyExact(t, e)
}

// TestSyncAllUploadsLocalRuns uploads runs recorded with SQLite alone.
func (fallbackContract) TestSyncAllUploadsLocalRuns(t *testing.T, newURL func(testing.TB) string) {
	e := newEnv(t, newURL(t))
	ctx := context.Background()
	run, err := tracker.Start(ctx, e.store, "ridership", tracker.RunOptions{Name: "sqlite-only"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := run.Finish(ctx, tracker.Result{Params: map[string]string{"a": "1"}, Metrics: map[string]float64{"m": 2}}); err != nil {
		t.Fatal(err)
	}
	if rep, err := e.tr.Sync(ctx, fallback.SyncOptions{}); err != nil || rep.Runs != 0 {
		t.Fatalf("plain sync touched a local-only run: %+v %v", rep, err)
	}
	if _, err := e.tr.Sync(ctx, fallback.SyncOptions{All: true}); err != nil {
		t.Fatal(err)
	}
	// The replayed run gained the local id tag in MLflow only.
	runs := e.srv.Runs()
	if len(runs) != 1 || runs[0].Tags[tracker.TagLocalRunID] != run.ID() || runs[0].Params["a"] != "1" {
		t.Fatalf("MLflow holds %+v", runs)
	}
}

// TestCooldown: after MLflow failed, the next run goes straight to SQLite
// instead of waiting for retries again; sync replays both.
func (fallbackContract) TestCooldown(t *testing.T, newURL func(testing.TB) string) {
	e := newEnv(t, newURL(t))
	var requests atomic.Int32
	e.srv.SetFault(func(int, *http.Request) mlflowtest.Fault {
		requests.Add(1)
		return mlflowtest.Fault{Kind: mlflowtest.Unavailable}
	})
	workload(t, e, "first", nil)
	if requests.Load() == 0 {
		t.Fatal("the first run never tried MLflow")
	}
	requests.Store(0)
	workload(t, e, "second", nil)
	if n := requests.Load(); n != 0 {
		t.Errorf("second run sent %d requests during the cooldown", n)
	}
	e.srv.SetFault(nil)
	if _, err := e.tr.Sync(context.Background(), fallback.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	verifyExact(t, e)
}

// TestWriteDuringAndAfterSync: data written to a run while it is being
// replayed, or after it was synced, is replayed by the next sync.
func (fallbackContract) TestWriteDuringAndAfterSync(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	e := newEnv(t, newURL(t))
	e.srv.Stop()
	run := workload(t, e, "late-writes", nil)
	if err := e.srv.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	e.srv.SetFault(func(_ int, r *http.Request) mlflowtest.Fault {
		if strings.HasSuffix(r.URL.Path, "runs/update") {
			once.Do(func() {
				if err := e.tr.LogBatch(ctx, run.ID(), nil, nil, []tracker.Tag{{Key: "note", Value: "during sync"}}); err != nil {
					t.Error(err)
				}
			})
		}
		return mlflowtest.Fault{}
	})
	rep, err := e.tr.Sync(ctx, fallback.SyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Synced != 0 {
		t.Fatalf("run marked synced although written during the sync: %+v", rep)
	}
	e.srv.SetFault(nil)
	if _, err := e.tr.Sync(ctx, fallback.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	verifyExact(t, e)
	// After the run is synced, a late tag makes it unsynced again.
	if err := e.tr.LogBatch(ctx, run.ID(), nil, nil, []tracker.Tag{{Key: "note", Value: "after sync"}}); err != nil {
		t.Fatal(err)
	}
	if ob, _ := e.store.Outbox().Run(ctx, localID(t, e, run.ID())); ob.State != localstore.StateUnsynced {
		t.Fatalf("state %s after a late write", ob.State)
	}
	if _, err := e.tr.Sync(ctx, fallback.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	verifyExact(t, e)
}

// TestSyncWhileDown: a sync while MLflow is still down fails fast, loses
// nothing and the runs stay unsynced.
func (fallbackContract) TestSyncWhileDown(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	e := newEnv(t, newURL(t))
	e.srv.Stop()
	a := workload(t, e, "a", nil)
	b := workload(t, e, "b", nil)
	rep, err := e.tr.Sync(ctx, fallback.SyncOptions{})
	if !errors.Is(err, tracker.ErrUnavailable) || rep.Runs != 1 {
		t.Fatalf("sync while down: %+v %v (want it to stop after the first run)", rep, err)
	}
	for _, id := range []string{a.ID(), b.ID()} {
		if ob, _ := e.store.Outbox().Run(ctx, localID(t, e, id)); ob.State != localstore.StateUnsynced {
			t.Errorf("run %s: %s", id, ob.State)
		}
	}
	if err := e.srv.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.tr.Sync(ctx, fallback.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	verifyExact(t, e)
}

// TestSyncDuringSlowStart is issue 20's trainer failure: MLflow answered
// runs/create slowly (a timeout on a loaded box) while the background syncer
// ran; the syncer replayed the half-started run as a second MLflow run and
// recorded that run's id, so the id StartRun handed to the trainer no longer
// resolved ("logging the training history: run <id>"). The run must continue
// under the id it was given and end up exactly once in MLflow.
func (fallbackContract) TestSyncDuringSlowStart(t *testing.T, newURL func(testing.TB) string) {
	e := newEnv(t, newURL(t))
	ctx := context.Background()
	exp, err := e.tr.GetOrCreateExperiment(ctx, "ridership")
	if err != nil {
		t.Fatal(err)
	}
	startArrived, releaseStart := make(chan struct{}), make(chan struct{})
	syncArrived, releaseSync := make(chan struct{}), make(chan struct{})
	var creates atomic.Int32
	e.srv.SetFault(func(_ int, r *http.Request) mlflowtest.Fault {
		if !strings.HasSuffix(r.URL.Path, "/runs/create") {
			return mlflowtest.Fault{}
		}
		switch creates.Add(1) {
		case 1: // StartRun's request: held until the syncer has had its go
			close(startArrived)
			<-releaseStart
		case 2: // a replay of the same run (the bug): held until StartRun returned
			close(syncArrived)
			<-releaseSync
		}
		return mlflowtest.Fault{}
	})
	startDone := startInBackground(e, exp.ID)
	var start startResult
	<-startArrived
	syncDone := make(chan struct{})
	var syncErr error
	go func() {
		defer close(syncDone)
		_, syncErr = e.tr.Sync(ctx, fallback.SyncOptions{})
	}()
	select {
	case <-syncArrived:
		close(releaseStart)
		start = <-startDone
		close(releaseSync)
		<-syncDone
	case <-syncDone:
		close(releaseStart)
		start = <-startDone
		close(releaseSync)
	}
	if start.err != nil {
		t.Fatalf("start: %v", start.err)
	}
	info := start.info
	if syncErr != nil {
		t.Fatalf("sync during the start: %v", syncErr)
	}
	e.srv.SetFault(nil)
	m := []tracker.Metric{{Key: "train_rmse", Value: 1.5, Timestamp: 1, Step: 0}}
	if err := e.tr.LogBatch(ctx, info.ID, m, []tracker.Param{{Key: "algorithm", Value: "gbdt"}}, nil); err != nil {
		t.Fatalf("logging to the run StartRun returned: %v", err)
	}
	if err := e.tr.EndRun(ctx, info.ID, tracker.StatusFinished, time.Time{}); err != nil {
		t.Fatalf("ending the run StartRun returned: %v", err)
	}
	if _, err := e.tr.Sync(ctx, fallback.SyncOptions{}); err != nil {
		t.Fatalf("sync: %v", err)
	}
	if runs := e.srv.Runs(); len(runs) != 1 {
		t.Fatalf("MLflow holds %d runs, want 1 (no duplicate replay)", len(runs))
	}
	verifyExact(t, e)
}

// TestOtherProcessSyncsDuringSlowStart: while one process's StartRun waits
// for MLflow's runs/create, a `runs sync` (plain and --all) of another
// process sharing the store must leave the run alone: the starting state
// is in the store, not in the starting process's memory. Before it was,
// the other process replayed the run as a second MLflow run.
func (fallbackContract) TestOtherProcessSyncsDuringSlowStart(t *testing.T, newURL func(testing.TB) string) {
	url := newURL(t)
	e := newEnv(t, url)
	ctx := context.Background()
	other := newTracker(t, e.srv, openStore(t, url, e.dir), fallback.Options{})
	exp, err := e.tr.GetOrCreateExperiment(ctx, "ridership")
	if err != nil {
		t.Fatal(err)
	}
	arrived, release, creates := holdFirstCreate(e)
	started := startInBackground(e, exp.ID)
	<-arrived
	for _, all := range []bool{false, true} {
		rep, err := other.Sync(ctx, fallback.SyncOptions{All: all})
		if err != nil || rep.Created != 0 || rep.Runs != 0 {
			t.Errorf("sync (all=%v) of another process during the start: %+v %v", all, rep, err)
		}
	}
	close(release)
	start := <-started
	e.srv.SetFault(nil)
	if start.err != nil {
		t.Fatal(start.err)
	}
	info := start.info
	if err := e.tr.LogBatch(ctx, info.ID, []tracker.Metric{{Key: "mae", Value: 1, Timestamp: 1}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.tr.EndRun(ctx, info.ID, tracker.StatusFinished, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Sync(ctx, fallback.SyncOptions{All: true}); err != nil {
		t.Fatal(err)
	}
	if n := creates.Load(); n != 1 {
		t.Errorf("%d runs/create requests, want 1", n)
	}
	verifyExact(t, e)
}

// holdFirstCreate makes MLflow hold the first runs/create request:
// arrived closes when it comes, closing release answers it; creates counts
// every runs/create.
func holdFirstCreate(e *env) (arrived, release chan struct{}, creates *atomic.Int32) {
	arrived, release, creates = make(chan struct{}), make(chan struct{}), new(atomic.Int32)
	e.srv.SetFault(func(_ int, r *http.Request) mlflowtest.Fault {
		if strings.HasSuffix(r.URL.Path, "/runs/create") && creates.Add(1) == 1 {
			close(arrived)
			<-release
		}
		return mlflowtest.Fault{}
	})
	return arrived, release, creates
}

type startResult struct {
	info tracker.RunInfo
	err  error
}

// startInBackground starts a run through e's tracker; the channel gets
// StartRun's answer.
func startInBackground(e *env, expID string) <-chan startResult {
	ch := make(chan startResult, 1)
	go func() {
		info, err := e.tr.StartRun(context.Background(), expID, tracker.RunOptions{Name: "slow-start", Source: testSource})
		ch <- startResult{info, err}
	}()
	return ch
}

// TestStaleStartTakenOver: a run left starting by a process that died
// while MLflow created it is replayed once it is older than the start
// timeout, and not before.
func (fallbackContract) TestStaleStartTakenOver(t *testing.T, newURL func(testing.TB) string) {
	url := newURL(t)
	e := newEnv(t, url)
	ctx := context.Background()
	exp, err := e.store.GetOrCreateExperiment(ctx, "ridership")
	if err != nil {
		t.Fatal(err)
	}
	// The dead process recorded the run and its data, never MLflow's answer.
	id := localstore.NewRunID()
	if _, err := e.store.StartRunWithID(ctx, exp.ID, id, localstore.StateStarting,
		tracker.RunOptions{Name: "orphan", Source: testSource, Tags: map[string]string{tracker.TagLocalRunID: id}}); err != nil {
		t.Fatal(err)
	}
	if err := e.store.LogBatch(ctx, id, []tracker.Metric{{Key: "mae", Value: 2, Timestamp: 1}}, []tracker.Param{{Key: "a", Value: "1"}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.store.EndRun(ctx, id, tracker.StatusFinished, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if rep, err := e.tr.Sync(ctx, fallback.SyncOptions{All: true}); err != nil || rep.Runs != 0 {
		t.Fatalf("a sync within the start timeout replayed the run: %+v %v", rep, err)
	}
	later := newTracker(t, e.srv, openStore(t, url, e.dir), fallback.Options{StartTimeout: time.Millisecond})
	time.Sleep(5 * time.Millisecond)
	rep, err := later.Sync(ctx, fallback.SyncOptions{})
	if err != nil || rep.Created != 1 || rep.Synced != 1 {
		t.Fatalf("sync after the start timeout: %+v %v", rep, err)
	}
	verifyExact(t, e)
}

// TestTwoProcessesSyncAtOnce: two processes sharing the store sync while
// MLflow is slow to create the run the first one replays; the second one
// leaves that run to it (it would create it a second time), and MLflow
// ends with the run once.
func (fallbackContract) TestTwoProcessesSyncAtOnce(t *testing.T, newURL func(testing.TB) string) {
	url := newURL(t)
	e := newEnv(t, url)
	ctx := context.Background()
	e.srv.Stop()
	workload(t, e, "down", nil)
	if err := e.srv.Start(); err != nil {
		t.Fatal(err)
	}
	other := newTracker(t, e.srv, openStore(t, url, e.dir), fallback.Options{})
	arrived, release, creates := holdFirstCreate(e)
	first := make(chan error, 1)
	go func() {
		_, err := e.tr.Sync(ctx, fallback.SyncOptions{})
		first <- err
	}()
	<-arrived
	for _, all := range []bool{false, true} {
		rep, err := other.Sync(ctx, fallback.SyncOptions{All: all})
		if err != nil || rep.Busy != 1 || rep.Created != 0 {
			t.Errorf("second process's sync (all=%v) while the first replays the run: %+v %v", all, rep, err)
		}
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	e.srv.SetFault(nil)
	if n := creates.Load(); n != 1 {
		t.Errorf("%d runs/create requests, want 1", n)
	}
	// Released: the other process may sync it now (and finds nothing to send).
	rep, err := other.Sync(ctx, fallback.SyncOptions{All: true})
	if err != nil || rep.Busy != 0 || rep.Runs != 1 || rep.Created != 0 {
		t.Errorf("sync after the first finished: %+v %v", rep, err)
	}
	verifyExact(t, e)
}
