package mlflow_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/mlflow"
	"github.com/flywheel-ml/flywheel/tracker/mlflowtest"
)

// The contract suite runs the same checks against the real MLflow 2.10.2
// server and against the in-process imitation (tracker/mlflowtest), so the
// imitation — kept only for faults a real server cannot be made to produce —
// cannot drift from what MLflow accepts and rejects.

func TestContractReal(t *testing.T) {
	m := harness.StartMLflow(t)
	runContract(t, m.URL)
}

func TestContractImitation(t *testing.T) {
	srv, err := mlflowtest.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	runContract(t, srv.URL)
}

func contractClient(t *testing.T, uri string) *mlflow.Client {
	t.Helper()
	cfg := mlflow.DefaultConfig()
	cfg.TrackingURI = uri
	cfg.RetryMax = 1
	cfg.RetryWaitMin, cfg.RetryWaitMax = 5*time.Millisecond, 20*time.Millisecond
	c, err := mlflow.New(mlflow.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func runContract(t *testing.T, uri string) {
	c := contractClient(t, uri)
	tests := []struct {
		name string
		fn   func(t *testing.T, c *mlflow.Client, uri string)
	}{
		{"RunLifecycle", contractRunLifecycle},
		{"Rejections", contractRejections},
		{"SearchFiltersAndPaging", contractSearch},
		{"Registry", contractRegistry},
		{"HTTPShapes", contractShapes},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, c, uri) })
	}
}

// newRun starts a run in a fresh experiment named after the test.
func newRun(t *testing.T, c *mlflow.Client, name string) (tracker.Experiment, tracker.RunInfo) {
	t.Helper()
	ctx := context.Background()
	exp, err := c.GetOrCreateExperiment(ctx, "contract-"+strings.ReplaceAll(t.Name(), "/", "-"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.StartRun(ctx, exp.ID, tracker.RunOptions{Name: name, Source: tracker.Source{User: "u", Name: "src", GitCommit: "deadbeef"}})
	if err != nil {
		t.Fatal(err)
	}
	return exp, info
}

func contractRunLifecycle(t *testing.T, c *mlflow.Client, _ string) {
	ctx := context.Background()
	exp, info := newRun(t, c, "r1")
	again, err := c.GetOrCreateExperiment(ctx, exp.Name)
	if err != nil || again.ID != exp.ID {
		t.Fatalf("get-or-create is not stable: %v %v %v", exp, again, err)
	}
	if byID, err := c.GetExperiment(ctx, exp.ID); err != nil || byID.Name != exp.Name {
		t.Fatalf("experiment by id %s: %+v %v", exp.ID, byID, err)
	}
	if !strings.HasPrefix(info.ArtifactURI, "mlflow-artifacts:/") || !strings.Contains(info.ArtifactURI, info.ID) || info.Status != tracker.StatusRunning {
		t.Fatalf("run info %+v", info)
	}
	// 1200 metric values over steps, 150 params and 120 tags need several chunks.
	var ms []tracker.Metric
	for i := 0; i < 1200; i++ {
		ms = append(ms, tracker.Metric{Key: "loss", Value: float64(i), Timestamp: int64(1000 + i), Step: int64(i)})
	}
	ms = append(ms, tracker.Metric{Key: "nan", Value: math.NaN(), Timestamp: 1, Step: 0},
		tracker.Metric{Key: "inf", Value: math.Inf(1), Timestamp: 1}, tracker.Metric{Key: "ninf", Value: math.Inf(-1), Timestamp: 1})
	var ps []tracker.Param
	for i := 0; i < 150; i++ {
		ps = append(ps, tracker.Param{Key: fmt.Sprintf("p%d", i), Value: fmt.Sprint(i)})
	}
	var ts []tracker.Tag
	for i := 0; i < 120; i++ {
		ts = append(ts, tracker.Tag{Key: fmt.Sprintf("t%d", i), Value: "v"})
	}
	if err := c.LogBatch(ctx, info.ID, ms, ps, ts); err != nil {
		t.Fatal(err)
	}
	ds := tracker.Dataset{Name: "chicago", Digest: "0123456789abcdef0123456789abcdef0123", SourceType: "local",
		Source: `{"uri": "data/chicago.csv"}`, Context: "training",
		Schema:  `{"mlflow_colspec": [{"type": "double", "name": "rides", "required": true}]}`,
		Profile: `{"num_rows": 3997}`}
	if err := c.LogInputs(ctx, info.ID, []tracker.Dataset{ds}); err != nil {
		t.Fatal(err)
	}
	if err := c.LogInputs(ctx, info.ID, []tracker.Dataset{ds}); err != nil {
		t.Fatalf("the same dataset twice: %v", err)
	}
	payload := bytes.Repeat([]byte{0, 1, 2, 255, '\n', '\r'}, 40000)
	if err := c.LogArtifact(ctx, info.ID, "model/model.onnx", bytes.NewReader(payload)); err != nil {
		t.Fatal(err)
	}
	if err := c.LogArtifact(ctx, info.ID, "notes with space.txt", strings.NewReader("hi")); err != nil {
		t.Fatal(err)
	}
	if err := c.EndRun(ctx, info.ID, tracker.StatusFinished, time.UnixMilli(5000)); err != nil {
		t.Fatal(err)
	}

	run, err := c.GetRun(ctx, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Params) != 150 || run.Tags["t119"] != "v" || run.Info.Status != tracker.StatusFinished || run.Info.EndTime != 5000 || run.Info.Name != "r1" {
		t.Errorf("run: %d params, status %s, end %d, name %q", len(run.Params), run.Info.Status, run.Info.EndTime, run.Info.Name)
	}
	for k, want := range map[string]string{tracker.TagRunName: "r1", tracker.TagUser: "u", tracker.TagSourceName: "src", tracker.TagSourceType: "LOCAL", tracker.TagGitCommit: "deadbeef"} {
		if run.Tags[k] != want {
			t.Errorf("system tag %s = %q, want %q", k, run.Tags[k], want)
		}
	}
	if m := run.Metrics["loss"]; m.Value != 1199 || m.Step != 1199 {
		t.Errorf("latest loss %+v", m)
	}
	if !math.IsNaN(run.Metrics["nan"].Value) || !math.IsInf(run.Metrics["inf"].Value, 1) || !math.IsInf(run.Metrics["ninf"].Value, -1) {
		t.Errorf("NaN/Inf round trip: %v %v %v", run.Metrics["nan"], run.Metrics["inf"], run.Metrics["ninf"])
	}
	if len(run.Datasets) != 1 || run.Datasets[0] != ds {
		t.Errorf("datasets %+v\nwant %+v", run.Datasets, ds)
	}
	hist, err := c.MetricHistory(ctx, info.ID, "loss")
	if err != nil || len(hist) != 1200 || hist[10].Timestamp != 1010 || hist[10].Step != 10 {
		t.Fatalf("history: %d values, err %v", len(hist), err)
	}
	files, err := c.ListArtifacts(ctx, info.ID, "")
	if err != nil || len(files) != 2 {
		t.Fatalf("list: %+v %v", files, err)
	}
	sub, _ := c.ListArtifacts(ctx, info.ID, "model")
	if len(sub) != 1 || sub[0].Path != "model/model.onnx" || sub[0].Size != int64(len(payload)) {
		t.Errorf("list model/: %+v", sub)
	}
	if missing, err := c.ListArtifacts(ctx, info.ID, "nope"); err != nil || len(missing) != 0 {
		t.Errorf("missing dir: %+v %v", missing, err)
	}
	for p, want := range map[string][]byte{"model/model.onnx": payload, "notes with space.txt": []byte("hi")} {
		rc, err := c.OpenArtifact(ctx, info.ID, p)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, want) {
			t.Errorf("artifact %s: %d bytes back, %d sent, not identical", p, len(got), len(want))
		}
	}
}

// contractRejections: what MLflow rejects, both reject, with MLflow's code.
func contractRejections(t *testing.T, c *mlflow.Client, _ string) {
	ctx := context.Background()
	_, info := newRun(t, c, "rejections")
	ds := func(mod func(*tracker.Dataset)) []tracker.Dataset {
		d := tracker.Dataset{Name: "d", Digest: "abcd1234", SourceType: "local", Source: "{}"}
		mod(&d)
		return []tracker.Dataset{d}
	}
	tests := []struct {
		name string
		call func() error
		kind error
		code string
		msg  string
	}{
		{"unknown run", func() error { _, err := c.GetRun(ctx, "0123456789abcdef0123456789abcdef"); return err }, tracker.ErrNotFound, "RESOURCE_DOES_NOT_EXIST", ""},
		{"unknown experiment", func() error { _, err := c.GetExperimentByName(ctx, "no-such-experiment"); return err }, tracker.ErrNotFound, "RESOURCE_DOES_NOT_EXIST", ""},
		{"param changed", func() error {
			if err := c.LogBatch(ctx, info.ID, nil, []tracker.Param{{Key: "a", Value: "1"}}, nil); err != nil {
				return err
			}
			return c.LogBatch(ctx, info.ID, nil, []tracker.Param{{Key: "a", Value: "2"}}, nil)
		}, tracker.ErrInvalid, "INVALID_PARAMETER_VALUE", "Changing param values is not allowed"},
		{"same param again is fine", func() error { return c.LogBatch(ctx, info.ID, nil, []tracker.Param{{Key: "a", Value: "1"}}, nil) }, nil, "", ""},
		{"bad metric key", func() error {
			return c.LogBatch(ctx, info.ID, []tracker.Metric{{Key: "bad*key", Value: 1, Timestamp: 1}}, nil, nil)
		}, tracker.ErrInvalid, "INVALID_PARAMETER_VALUE", "Invalid metric name"},
		{"param value too long", func() error {
			return c.LogBatch(ctx, info.ID, nil, []tracker.Param{{Key: "long", Value: strings.Repeat("x", 6001)}}, nil)
		}, tracker.ErrInvalid, "INVALID_PARAMETER_VALUE", "length"},
		{"dataset digest of 37 characters", func() error {
			return c.LogInputs(ctx, info.ID, ds(func(d *tracker.Dataset) { d.Digest = strings.Repeat("a", 37) }))
		}, tracker.ErrInvalid, "INVALID_PARAMETER_VALUE", "Dataset digest exceeds the maximum length of 36"},
		{"dataset digest as sha256:<hex>", func() error {
			return c.LogInputs(ctx, info.ID, ds(func(d *tracker.Dataset) { d.Digest = "sha256:" + strings.Repeat("ab", 32) }))
		}, tracker.ErrInvalid, "INVALID_PARAMETER_VALUE", "Dataset digest exceeds the maximum length of 36"},
		{"dataset digest of 36 characters", func() error {
			return c.LogInputs(ctx, info.ID, ds(func(d *tracker.Dataset) { d.Digest = strings.Repeat("b", 36) }))
		}, nil, "", ""},
		{"dataset name of 501 characters", func() error {
			return c.LogInputs(ctx, info.ID, ds(func(d *tracker.Dataset) { d.Name = strings.Repeat("n", 501) }))
		}, tracker.ErrInvalid, "INVALID_PARAMETER_VALUE", "Dataset name exceeds the maximum length of 500"},
		{"input tag value of 501 characters", func() error {
			return c.LogInputs(ctx, info.ID, ds(func(d *tracker.Dataset) { d.Context = strings.Repeat("c", 501) }))
		}, tracker.ErrInvalid, "INVALID_PARAMETER_VALUE", "InputTag value exceeds the maximum length of 500"},
		{"bad filter", func() error {
			_, err := c.SearchRuns(ctx, tracker.SearchQuery{ExperimentIDs: []string{info.ExperimentID}, Filter: "metrics.x < 'a'"})
			return err
		}, tracker.ErrInvalid, "INVALID_PARAMETER_VALUE", ""},
		{"version of unknown model", func() error { _, err := c.CreateModelVersion(ctx, "no-such-model", info.ID, "model"); return err }, tracker.ErrNotFound, "RESOURCE_DOES_NOT_EXIST", ""},
		{"bad status", func() error { return c.EndRun(ctx, info.ID, "DONE", time.Time{}) }, tracker.ErrInvalid, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if tc.kind == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.kind) {
				t.Fatalf("err %v, want %v", err, tc.kind)
			}
			var te *tracker.Error
			if tc.code != "" && (!errors.As(err, &te) || te.Code != tc.code || te.Status != http.StatusBadRequest && te.Status != http.StatusNotFound) {
				t.Fatalf("err %v, want code %s", err, tc.code)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err %v, want it to say %q", err, tc.msg)
			}
		})
	}
}

func contractSearch(t *testing.T, c *mlflow.Client, _ string) {
	ctx := context.Background()
	exp, first := newRun(t, c, "s0")
	ids := []string{first.ID}
	for i := 1; i < 7; i++ {
		info, err := c.StartRun(ctx, exp.ID, tracker.RunOptions{Name: fmt.Sprintf("s%d", i), StartTime: time.UnixMilli(int64(1000 * (i + 1)))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, info.ID)
	}
	for i, id := range ids {
		err := c.LogBatch(ctx, id, []tracker.Metric{{Key: "mae", Value: float64(i), Timestamp: 1, Step: 0}},
			[]tracker.Param{{Key: "algorithm", Value: []string{"ridge", "gbdt"}[i%2]}}, []tracker.Tag{{Key: "flywheel.local_run_id", Value: fmt.Sprintf("local-%d", i)}})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := c.EndRun(ctx, ids[6], tracker.StatusFinished, time.Time{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		filter string
		order  []string
		page   int
		want   int
		first  string // name of the first run, when order is set
	}{
		{"", nil, 0, 7, ""},
		{"", nil, 2, 7, ""},
		{"params.algorithm = 'gbdt'", nil, 2, 3, ""},
		{"metrics.mae > 2 and params.algorithm = 'ridge'", nil, 0, 2, ""},
		{"tags.`flywheel.local_run_id` = 'local-3'", nil, 0, 1, ""},
		{"attributes.status = 'FINISHED'", nil, 0, 1, ""},
		{"", []string{"metrics.mae DESC"}, 3, 7, "s6"},
		{"metrics.mae < 3", []string{"metrics.mae ASC"}, 1, 3, "s0"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s order %v page %d", tc.filter, tc.order, tc.page), func(t *testing.T) {
			runs, err := c.SearchRuns(ctx, tracker.SearchQuery{ExperimentIDs: []string{exp.ID}, Filter: tc.filter, OrderBy: tc.order, PageSize: tc.page})
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, r := range runs {
				if seen[r.Info.ID] {
					t.Fatalf("run %s twice across pages", r.Info.ID)
				}
				seen[r.Info.ID] = true
			}
			if len(runs) != tc.want {
				t.Fatalf("%d runs, want %d", len(runs), tc.want)
			}
			if tc.first != "" && runs[0].Info.Name != tc.first {
				t.Fatalf("first run %s, want %s", runs[0].Info.Name, tc.first)
			}
		})
	}
	limited, err := c.SearchRuns(ctx, tracker.SearchQuery{ExperimentIDs: []string{exp.ID}, MaxResults: 5, PageSize: 2})
	if err != nil || len(limited) != 5 {
		t.Fatalf("max 5 in pages of 2: %d runs, %v", len(limited), err)
	}
}

func contractRegistry(t *testing.T, c *mlflow.Client, _ string) {
	ctx := context.Background()
	_, info := newRun(t, c, "registry")
	_, other := newRun(t, c, "registry-2")
	name := "model-" + info.ID[:8]
	if err := c.CreateRegisteredModel(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateRegisteredModel(ctx, name); err != nil {
		t.Fatalf("existing model must not be an error: %v", err)
	}
	if err := c.LogArtifact(ctx, info.ID, "model/MLmodel", strings.NewReader("flavors: {}\n")); err != nil {
		t.Fatal(err)
	}
	mv, err := c.CreateModelVersion(ctx, name, info.ID, "model")
	if err != nil || mv.Version != "1" || mv.Source != info.ArtifactURI+"/model" || mv.RunID != info.ID {
		t.Fatalf("version %+v %v", mv, err)
	}
	uri, err := c.GetModelVersionDownloadURI(ctx, name, "1")
	if err != nil || uri != mv.Source {
		t.Fatalf("download uri %q %v, source %s", uri, err, mv.Source)
	}
	rc, err := c.OpenArtifactURI(ctx, uri, "MLmodel")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "flavors: {}\n" {
		t.Fatalf("version file through its download uri: %q", b)
	}
	if _, err := c.OpenArtifactURI(ctx, uri, "missing.onnx"); !errors.Is(err, tracker.ErrNotFound) {
		t.Errorf("missing version file: %v, want ErrNotFound", err)
	}
	mv2, err := c.CreateModelVersion(ctx, name, other.ID, "model")
	if err != nil || mv2.Version != "2" {
		t.Fatalf("second version %+v %v", mv2, err)
	}
	ann := tracker.VersionAnnotation{Description: "gbdt, test MAE 0.1", Tags: map[string]string{"algorithm": "gbdt", "repository_version": "2"}}
	if err := c.AnnotateModelVersion(ctx, name, "2", ann); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetModelVersion(ctx, name, "2")
	if err != nil || got.Description != ann.Description || got.Tags["algorithm"] != "gbdt" || got.Tags["repository_version"] != "2" {
		t.Fatalf("annotated version %+v %v", got, err)
	}
	for _, v := range []string{"1", "2"} {
		if err := c.SetAlias(ctx, name, "champion", v); err != nil {
			t.Fatal(err)
		}
		byAlias, err := c.GetModelVersionByAlias(ctx, name, "champion")
		if err != nil || byAlias.Version != v || len(byAlias.Aliases) != 1 || byAlias.Aliases[0] != "champion" {
			t.Fatalf("alias moved to %s: %+v %v", v, byAlias, err)
		}
	}
	if _, err := c.GetModelVersionByAlias(ctx, name, "nope"); !errors.Is(err, tracker.ErrNotFound) {
		t.Errorf("unknown alias: %v, want ErrNotFound", err)
	}
	if err := c.SetAlias(ctx, name, "champion", "9"); !errors.Is(err, tracker.ErrNotFound) {
		t.Errorf("alias on a missing version: %v, want ErrNotFound", err)
	}
	if err := c.SetAlias(ctx, name, "latest", "1"); !errors.Is(err, tracker.ErrInvalid) {
		t.Errorf("reserved alias 'latest': %v, want ErrInvalid", err)
	}
	found, err := c.SearchModelVersions(ctx, fmt.Sprintf("name='%s' and run_id='%s'", name, info.ID))
	if err != nil || len(found) != 1 || found[0].Version != "1" {
		t.Errorf("search versions: %+v %v", found, err)
	}
	all, err := c.SearchModelVersions(ctx, fmt.Sprintf("name='%s'", name))
	if err != nil || len(all) != 2 {
		t.Errorf("search versions of %s: %+v %v", name, all, err)
	}
}

// contractShapes: JSON errors for API errors, HTML for unknown routes.
func contractShapes(t *testing.T, _ *mlflow.Client, uri string) {
	tests := []struct {
		method, path, ctype, body string
		status                    int
		contains                  string
	}{
		{"GET", "/api/2.0/mlflow/nope", "", "", 404, "<!doctype html>"},
		{"GET", "/api/2.0/mlflow/runs/create", "", "", 405, "Method Not Allowed"},
		{"POST", "/api/2.0/mlflow/runs/log-batch", "application/json", "{}", 400, "INVALID_PARAMETER_VALUE"},
		{"GET", "/api/2.0/mlflow/runs/get?run_id=x", "", "", 404, `RESOURCE_DOES_NOT_EXIST`},
		{"POST", "/api/2.0/mlflow/experiments/create", "application/json", `{"name":"Default"}`, 400, `RESOURCE_ALREADY_EXISTS`},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, uri+tc.path, strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(strings.ToLower(string(b)), strings.ToLower(tc.contains)) {
				t.Fatalf("%d %s, want %d containing %q", resp.StatusCode, b, tc.status, tc.contains)
			}
		})
	}
}
