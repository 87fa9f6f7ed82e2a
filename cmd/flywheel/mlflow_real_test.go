package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/mlflow"
	"github.com/flywheel-ml/flywheel/train"
)

// TestRealMLflow runs `flywheel train`, `flywheel runs` and the fallback
// against one real MLflow 2.10.2 server, and reads what Flywheel wrote with
// MLflow's own Python client.
func TestRealMLflow(t *testing.T) {
	clearTrackingEnv(t)
	m := harness.StartMLflow(t)
	dir := t.TempDir()
	models, db := filepath.Join(dir, "models"), filepath.Join(dir, "tracking.db")
	t.Setenv("MLFLOW_TRACKING_URI", m.URL)
	t.Setenv("FLYWHEEL_TRACKING_DB", db)
	params := filepath.Join(dir, "params.yaml")
	if err := os.WriteFile(params, []byte("gbdt:\n  iterations: 12\n  max_leaves: 8\n  patience: 50\n  tolerance: 0\n  learning_rate: 0.3\nmlp:\n  epochs: 60\n  hidden: [8]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := func(algo string) []string {
		return []string{"--data", testCSV, "--algorithm", algo, "--quiet", "--git-commit", "abc123", "--params", params, "--models", models,
			"--train-from", "2010-01-01", "--train-until", "2011-12-31", "--test-from", "2012-01-01", "--test-until", "2012-03-31",
			"--backtest-folds", "0", "--force"} // each algorithm publishes, better or not (small fits that still beat the seasonal naive)
	}
	client := realClient(t, m.URL)
	ctx := context.Background()
	var runIDs []string

	t.Run("TrainEachAlgorithm", func(t *testing.T) {
		for i, algo := range []string{train.Ridge, train.MLP, train.GBDT} {
			out := trainCmd(t, args(algo)...)
			v := i + 1
			if !strings.Contains(out, fmt.Sprintf("published ridership version %d (%s)", v, algo)) ||
				!strings.Contains(out, fmt.Sprintf("registered ridership version %d, alias champion", v)) {
				t.Fatalf("%s: output\n%s", algo, out)
			}
			c := loadCard(t, filepath.Join(models, "ridership", strconv.Itoa(v)))
			if c.Training.Tracker != "mlflow" || c.Training.RegistryVersion != strconv.Itoa(v) || c.Training.TrackerState != "" {
				t.Errorf("%s: card training %+v", algo, c.Training)
			}
			run, err := client.GetRun(ctx, c.Training.RunID)
			if err != nil {
				t.Fatal(err)
			}
			runIDs = append(runIDs, run.Info.ID)
			if run.Info.Status != tracker.StatusFinished || run.Tags[train.TagModelVersion] != strconv.Itoa(v) || len(run.Datasets) != 2 {
				t.Errorf("%s: run %s status %s tags %v, %d datasets", algo, run.Info.ID, run.Info.Status, run.Tags[train.TagModelVersion], len(run.Datasets))
			}
			mv, err := client.GetModelVersion(ctx, "ridership", strconv.Itoa(v))
			if err != nil || mv.RunID != run.Info.ID || mv.Tags[train.VersionTagRepository] != strconv.Itoa(v) ||
				mv.Tags[train.VersionTagAlgorithm] != algo || mv.Description == "" {
				t.Errorf("%s: version %+v %v", algo, mv, err)
			}
			if algo == train.GBDT { // everything a tracked fit holds, as MLflow answers it
				checkTrackedRun(t, realRun(t, client, run.Info.ID), c, filepath.Join(models, "ridership", strconv.Itoa(v)))
			}
		}
		champ, err := client.GetModelVersionByAlias(ctx, "ridership", "champion")
		if err != nil || champ.Version != "3" {
			t.Fatalf("champion %+v %v", champ, err)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("PythonClient", func(t *testing.T) {
		out, err := m.Python(pythonReader)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Runs []struct {
				Status   string            `json:"status"`
				User     string            `json:"user_id"`
				Params   int               `json:"params"`
				Datasets []json.RawMessage `json:"datasets"`
				Schema   string            `json:"schema"`
			} `json:"runs"`
			Alias struct {
				Version string            `json:"version"`
				Tags    map[string]string `json:"tags"`
			} `json:"alias"`
			Info struct {
				Flavors   map[string]map[string]any `json:"flavors"`
				Signature struct {
					Inputs  string `json:"inputs"`
					Outputs string `json:"outputs"`
				} `json:"signature"`
				Example  map[string]any `json:"example_info"`
				Metadata map[string]any `json:"metadata"`
			} `json:"info"`
			Files map[string]string `json:"files"` // downloaded file → sha256
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if len(got.Runs) != 3 {
			t.Fatalf("search_runs: %d runs\n%s", len(got.Runs), out)
		}
		for _, r := range got.Runs {
			if r.Status != "FINISHED" || r.User == "" || r.Params == 0 || len(r.Datasets) != 2 || !strings.Contains(r.Schema, `"name": "date"`) && !strings.Contains(r.Schema, `"name":"date"`) {
				t.Errorf("run as MLflow reads it: %+v", r)
			}
		}
		if got.Alias.Version != "3" || got.Alias.Tags[train.VersionTagRepository] != "3" {
			t.Errorf("get_model_version_by_alias: %+v", got.Alias)
		}
		onnx, pyfunc := got.Info.Flavors["onnx"], got.Info.Flavors["python_function"]
		if onnx["data"] != "model.onnx" || onnx["onnx_version"] == nil || pyfunc["loader_module"] != "mlflow.onnx" {
			t.Errorf("get_model_info flavors: %v", got.Info.Flavors)
		}
		if !strings.Contains(got.Info.Signature.Inputs, `"name": "features"`) || !strings.Contains(got.Info.Signature.Inputs, `"float32"`) ||
			!strings.Contains(got.Info.Signature.Outputs, "tensor") || got.Info.Example["artifact_path"] != "input_example.json" {
			t.Errorf("get_model_info signature %+v, example %v", got.Info.Signature, got.Info.Example)
		}
		if names, _ := got.Info.Metadata["feature_names"].([]any); len(names) == 0 {
			t.Errorf("MLmodel metadata without feature names: %v", got.Info.Metadata)
		}
		for _, f := range []string{modelrepo.ModelFile, modelrepo.CardFile} {
			b, err := os.ReadFile(filepath.Join(models, "ridership", "3", f))
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(b)
			if got.Files[f] != hex.EncodeToString(sum[:]) {
				t.Errorf("download_artifacts %s: sha256 %s, published file %x", f, got.Files[f], sum)
			}
		}
	})

	t.Run("RunsCommands", func(t *testing.T) {
		out, err := runCLI(t, "list")
		if err != nil || strings.Count(out, "ridership-") < 3 || strings.Contains(out, "complete only locally") {
			t.Errorf("runs list: %v\n%s", err, out)
		}
		out, err = runCLI(t, "list", "--filter", "metrics.test_mae < 1.5")
		if err != nil || strings.Count(out, "ridership-") == 0 {
			t.Errorf("runs list --filter: %v\n%s", err, out)
		}
		out, err = runCLI(t, "show", runIDs[2])
		if err != nil || !strings.Contains(out, "FINISHED") || !strings.Contains(out, "model/MLmodel") {
			t.Errorf("runs show: %v\n%s", err, out)
		}
		out, err = runCLI(t, append([]string{"compare"}, runIDs...)...)
		if err != nil || !strings.Contains(out, "test_mae") {
			t.Errorf("runs compare: %v\n%s", err, out)
		}
		out, err = runCLI(t, "sync")
		if err != nil || !strings.Contains(out, "0 checked") {
			t.Errorf("runs sync with nothing to replay: %v\n%s", err, out)
		}
	})

	t.Run("RejectionIsReportedNotPublished", func(t *testing.T) {
		// A run MLflow rejects (here: its experiment is deleted) is not
		// "unreachable": train fails with MLflow's answer before publishing.
		exp, err := client.GetOrCreateExperiment(ctx, "deleted-experiment")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Python(`import mlflow, sys; mlflow.MlflowClient().delete_experiment(sys.argv[1])`, exp.ID); err != nil {
			t.Fatal(err)
		}
		rejected := filepath.Join(t.TempDir(), "models")
		var out, errb bytes.Buffer
		err = runTrain(ctx, append(args(train.Ridge), "--models", rejected, "--experiment", "deleted-experiment"), &out, &errb)
		all := out.String() + errb.String()
		if err == nil || !strings.Contains(err.Error(), "INVALID_PARAMETER_VALUE") || strings.Contains(all+err.Error(), "unreachable") {
			t.Fatalf("train into a deleted experiment: %v\n%s", err, all)
		}
		if _, serr := os.Stat(filepath.Join(rejected, "ridership")); !os.IsNotExist(serr) {
			t.Errorf("a rejected run published a version: %v", serr)
		}
	})

	t.Run("ServeFromRegistry", func(t *testing.T) { serveFromRegistry(t, m, client, models, runIDs) })

	t.Run("StoppedMidRunThenSync", func(t *testing.T) {
		tf := trackingFlags{uri: m.URL, db: db, timeout: 2 * time.Second, retries: 0}
		tr, err := tf.open(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		cfg := train.DefaultConfig()
		cfg.Algorithm = train.Ridge
		data, err := train.LoadData(testCSV, "", train.Range{From: testDay(t, "2010-01-01"), Until: testDay(t, "2011-12-31")}, train.Range{From: testDay(t, "2012-01-01"), Until: testDay(t, "2012-03-31")})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Data = data
		tracking := train.Tracking{Recorder: tr.Tracker, Kind: tr.kind, Run: tracker.RunOptions{Source: tracker.Source{User: "tester", Name: "flywheel train"}}}
		run, err := tracking.StartRun(ctx, &cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.GetRun(ctx, run.ID()); err != nil {
			t.Fatalf("the run did not start in MLflow: %v", err)
		}
		m.Stop() // mid-run: everything after the start goes to the local store
		res, err := train.Fit(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := train.PublishTracked(ctx, tracking, run, models, res, "champion")
		if err != nil || pub.TrackErr != nil || !pub.Unsynced {
			t.Fatalf("publish while MLflow is down: %+v %v", pub, err)
		}
		if c := loadCard(t, pub.Dir); c.Training.TrackerState != "unsynced" {
			t.Errorf("card says tracker_state %q", c.Training.TrackerState)
		}
		m.Start()
		out, err := runCLI(t, "sync")
		if err != nil || !strings.Contains(out, "1 checked, 1 complete in MLflow, 0 created") {
			t.Fatalf("sync after restart: %v\n%s", err, out)
		}
		out, err = runCLI(t, "sync")
		if err != nil || !regexp.MustCompile(`0 checked.*\nsent: 0 params, 0 tags, 0 metric values, 0 datasets, 0 artifacts, 0 model versions, 0 aliases`).MatchString(out) {
			t.Fatalf("second sync sent something: %v\n%s", err, out)
		}
		r, err := client.GetRun(ctx, run.ID())
		if err != nil || r.Info.Status != tracker.StatusFinished || len(r.Datasets) != 2 || r.Tags[train.TagModelVersion] != strconv.Itoa(pub.Version) {
			t.Fatalf("replayed run %+v %v", r.Info, err)
		}
		// Exactly the local run: params, tags, every metric value with its
		// step and timestamp, nothing twice.
		got, local := realRun(t, client, run.ID()), sqliteRun(t, db, r.Tags[tracker.TagLocalRunID])
		if fmt.Sprint(metricSet(got.metrics)) != fmt.Sprint(metricSet(local.metrics)) {
			t.Errorf("metrics differ:\nMLflow %v\nlocal  %v", metricSet(got.metrics), metricSet(local.metrics))
		}
		if fmt.Sprint(got.params) != fmt.Sprint(local.params) || got.info.StartTime != local.info.StartTime || got.info.EndTime != local.info.EndTime {
			t.Errorf("params or times differ: %v %v / %v", got.params, got.info, local.info)
		}
		for k, v := range local.tags {
			if got.tags[k] != v {
				t.Errorf("tag %s: MLflow %q, local %q", k, got.tags[k], v)
			}
		}
		for p, b := range local.artifacts {
			if !bytes.Equal(got.artifacts[p], b) {
				t.Errorf("artifact %s differs after the replay", p)
			}
		}
		if out, err := runCLI(t, "show", r.Tags[tracker.TagLocalRunID]); err != nil || !strings.Contains(out, "local run") || !strings.Contains(out, "FINISHED") {
			t.Errorf("runs show by local id: %v\n%s", err, out)
		}
		arts, err := client.ListArtifacts(ctx, run.ID(), "model")
		if err != nil || len(arts) != 7 {
			t.Errorf("replayed artifacts %+v %v", arts, err)
		}
		same, err := client.SearchRuns(ctx, tracker.SearchQuery{ExperimentIDs: []string{r.Info.ExperimentID},
			Filter: fmt.Sprintf("tags.`%s` = '%s'", tracker.TagLocalRunID, r.Tags[tracker.TagLocalRunID])})
		if err != nil || len(same) != 1 {
			t.Errorf("runs with the local id: %d %v", len(same), err)
		}
		vs, err := client.SearchModelVersions(ctx, fmt.Sprintf("name='ridership' and run_id='%s'", run.ID()))
		if err != nil || len(vs) != 1 || vs[0].Tags[train.VersionTagRepository] != strconv.Itoa(pub.Version) {
			t.Errorf("replayed versions %+v %v", vs, err)
		}
		if champ, err := client.GetModelVersionByAlias(ctx, "ridership", "champion"); err != nil || len(vs) == 1 && champ.Version != vs[0].Version {
			t.Errorf("champion after sync %+v %v", champ, err)
		}
	})
}

// serveFromRegistry runs `flywheel serve --models models:/ridership@champion`
// under a bounded load loop and moves the alias: back to version 1, to a
// version whose model.onnx is corrupt (never served), to version 2 while
// MLflow is down (serving continues; the move lands after MLflow is back).
// No request may fail.
func serveFromRegistry(t *testing.T, m *harness.MLflow, client *mlflow.Client, models string, runIDs []string) {
	ctx := context.Background()
	bin := harness.BuildFlywheel(t)
	addr := harness.FreeAddr(t)
	srv := harness.StartFlywheel(t, bin, "serve", addr, "/v2/models/ridership/ready",
		"--models", "models:/ridership@champion", "--tracking-uri", m.URL, "--registry-poll", "300ms",
		"--registry-cache", filepath.Join(t.TempDir(), "cache"), "--listen", addr, "--tracking-retries", "0", "--tracking-timeout", "2s")
	c := loadCard(t, filepath.Join(models, "ridership", "3"))
	row := make([]float32, len(c.FeatureNames()))
	for i := range row {
		row[i] = 1
	}
	body, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{"name": c.Inputs[0].Name, "shape": []int{1, len(row)}, "datatype": "FP32", "data": row}}})
	infer := func() (string, error) {
		resp, err := httpClient.Post(srv.URL+"/v2/models/ridership/infer", "application/json", bytes.NewReader(body))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var out struct {
			Version string `json:"model_version"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			return "", fmt.Errorf("infer: %s %v", resp.Status, err)
		}
		return out.Version, nil
	}
	if v, err := infer(); err != nil || v != "3" {
		t.Fatalf("serving %q %v, want the champion, version 3", v, err)
	}
	// Bounded load: two workers, at most 60 s or 200 000 requests.
	var (
		mu       sync.Mutex
		sent     int
		failures []error
		seen     = map[string]int{}
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	deadline := time.Now().Add(60 * time.Second)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100000 && time.Now().Before(deadline); i++ {
				select {
				case <-stop:
					return
				default:
				}
				v, err := infer()
				time.Sleep(time.Millisecond) // bounded rate: the box is shared
				mu.Lock()
				sent++
				seen[v]++
				if err != nil {
					failures = append(failures, err)
				}
				mu.Unlock()
			}
		}()
	}
	waitServing := func(want string, within time.Duration) {
		t.Helper()
		start := time.Now()
		end := start.Add(within)
		for time.Now().Before(end) {
			if v, err := infer(); err == nil && v == want {
				t.Logf("alias moved to %s: serving it after %s (poll interval 300ms)", want, time.Since(start).Round(time.Millisecond))
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		v, err := infer()
		t.Fatalf("still serving %q (%v) %s after the alias moved to %s\n%s", v, err, within, want, tail(srv.Logs()))
	}
	// A rollback to a lower version switches within the poll interval (+ load time).
	if err := client.SetAlias(ctx, "ridership", "champion", "1"); err != nil {
		t.Fatal(err)
	}
	waitServing("1", 15*time.Second)

	// A version whose model.onnx is corrupt never replaces the serving one.
	corrupt := registerCopy(t, client, runIDs[2], []byte("this is not an ONNX graph"))
	if err := client.SetAlias(ctx, "ridership", "champion", corrupt); err != nil {
		t.Fatal(err)
	}
	end := time.Now().Add(20 * time.Second)
	for !srv.Contains("failed to load") && time.Now().Before(end) {
		time.Sleep(100 * time.Millisecond)
	}
	if !srv.Contains("failed to load") {
		t.Errorf("the corrupt version %s was not tried\n%s", corrupt, tail(srv.Logs()))
	}
	time.Sleep(time.Second) // a few more polls
	if v, err := infer(); err != nil || v != "1" {
		t.Fatalf("after a corrupt version: serving %q %v, want 1", v, err)
	}

	// MLflow down: serving continues; the alias moved meanwhile is followed once it is back.
	m.Stop()
	time.Sleep(2 * time.Second)
	if v, err := infer(); err != nil || v != "1" {
		t.Fatalf("with MLflow down: serving %q %v, want 1", v, err)
	}
	m.Start()
	if err := client.SetAlias(ctx, "ridership", "champion", "2"); err != nil {
		t.Fatal(err)
	}
	waitServing("2", 15*time.Second)
	close(stop)
	wg.Wait()
	t.Logf("load loop: %d requests, by version %v, %d failed", sent, seen, len(failures))
	if len(failures) > 0 || sent < 100 {
		t.Fatalf("%d of %d requests failed, first: %v", len(failures), sent, failures[0])
	}
	if err := client.SetAlias(ctx, "ridership", "champion", "3"); err != nil {
		t.Fatal(err)
	}
	httpClient.CloseIdleConnections() // serve drains open keep-alive connections on SIGTERM
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func tail(s string) string {
	if len(s) > 4000 {
		return "…" + s[len(s)-4000:]
	}
	return s
}

// registerCopy registers a new version from a run holding the files of
// fromRun's model/ with model.onnx replaced by graph; it returns the version.
func registerCopy(t *testing.T, client *mlflow.Client, fromRun string, graph []byte) string {
	t.Helper()
	ctx := context.Background()
	from, err := client.GetRun(ctx, fromRun)
	if err != nil {
		t.Fatal(err)
	}
	info, err := client.StartRun(ctx, from.Info.ExperimentID, tracker.RunOptions{Name: "corrupt-copy"})
	if err != nil {
		t.Fatal(err)
	}
	files, err := client.ListArtifacts(ctx, fromRun, "model")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		var b []byte
		if strings.HasSuffix(f.Path, "/model.onnx") {
			b = graph
		} else {
			rc, err := client.OpenArtifact(ctx, fromRun, f.Path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ = io.ReadAll(rc)
			rc.Close()
		}
		if err := client.LogArtifact(ctx, info.ID, f.Path, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	if err := client.EndRun(ctx, info.ID, tracker.StatusFinished, time.Time{}); err != nil {
		t.Fatal(err)
	}
	mv, err := client.CreateModelVersion(ctx, "ridership", info.ID, "model")
	if err != nil {
		t.Fatal(err)
	}
	return mv.Version
}

// realRun is what the MLflow server holds about a run, in checkTrackedRun's
// shape: full metric histories, every artifact's bytes, its versions.
func realRun(t *testing.T, c *mlflow.Client, runID string) trackedRun {
	t.Helper()
	ctx := context.Background()
	r, err := c.GetRun(ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	out := trackedRun{info: r.Info, params: r.Params, tags: r.Tags, datasets: r.Datasets, artifacts: map[string][]byte{}}
	for k := range r.Metrics {
		h, err := c.MetricHistory(ctx, runID, k)
		if err != nil {
			t.Fatal(err)
		}
		out.metrics = append(out.metrics, h...)
	}
	var walk func(dir string)
	walk = func(dir string) {
		files, err := c.ListArtifacts(ctx, runID, dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if f.IsDir {
				walk(f.Path)
				continue
			}
			rc, err := c.OpenArtifact(ctx, runID, f.Path)
			if err != nil {
				t.Fatal(err)
			}
			out.artifacts[f.Path], _ = io.ReadAll(rc)
			rc.Close()
		}
	}
	walk("")
	vs, err := c.SearchModelVersions(ctx, fmt.Sprintf("name='ridership' and run_id='%s'", runID))
	if err != nil {
		t.Fatal(err)
	}
	out.versions = vs
	if mv, err := c.GetModelVersionByAlias(ctx, "ridership", "champion"); err == nil {
		out.champion = mv.Version
	}
	return out
}

// pythonReader reads with MLflow's Python client what a tracker wrote.
const pythonReader = `
import hashlib, json, os
import mlflow
from mlflow import MlflowClient
c = MlflowClient()
runs = mlflow.search_runs(experiment_names=["ridership"], output_format="list", filter_string="params.seed = '1'")
out = {"runs": [{"status": r.info.status, "user_id": r.info.user_id, "params": len(r.data.params),
                 "datasets": [d.dataset.digest for d in r.inputs.dataset_inputs],
                 "schema": r.inputs.dataset_inputs[0].dataset.schema if r.inputs.dataset_inputs else ""} for r in runs]}
mv = c.get_model_version_by_alias("ridership", "champion")
out["alias"] = {"version": mv.version, "tags": mv.tags}
info = mlflow.models.get_model_info("models:/ridership@champion")
out["info"] = {"flavors": info.flavors, "signature": info.signature.to_dict() if info.signature else None,
               "example_info": info.saved_input_example_info, "metadata": info.metadata}
d = mlflow.artifacts.download_artifacts(artifact_uri="models:/ridership@champion")
out["files"] = {f: hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest() for f in os.listdir(d) if os.path.isfile(os.path.join(d, f))}
print(json.dumps(out))
`

func realClient(t *testing.T, uri string) *mlflow.Client {
	t.Helper()
	cfg := mlflow.DefaultConfig()
	cfg.TrackingURI = uri
	c, err := mlflow.New(mlflow.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testDay(t *testing.T, s string) time.Time {
	t.Helper()
	d, err := time.Parse("2006-01-02", s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
