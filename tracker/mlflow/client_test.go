package mlflow_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/mlflow"
	"github.com/flywheel-ml/flywheel/tracker/mlflowtest"
)

func newClient(t *testing.T, mod func(*mlflow.Config)) (*mlflow.Client, *mlflowtest.Server) {
	t.Helper()
	srv, err := mlflowtest.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cfg := mlflow.DefaultConfig()
	cfg.TrackingURI = srv.URL
	cfg.Timeout = time.Second
	cfg.RetryMax = 3
	cfg.RetryWaitMin = 5 * time.Millisecond
	cfg.RetryWaitMax = 20 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	c, err := mlflow.New(mlflow.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, srv
}

func startRun(t *testing.T, c *mlflow.Client) tracker.RunInfo {
	t.Helper()
	ctx := context.Background()
	exp, err := c.GetOrCreateExperiment(ctx, "contract")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.StartRun(ctx, exp.ID, tracker.RunOptions{Name: "r1", Source: tracker.Source{User: "u", Name: "src", GitCommit: "deadbeef"}})
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func TestRunLifecycle(t *testing.T) {
	ctx := context.Background()
	c, srv := newClient(t, nil)
	exp, err := c.GetOrCreateExperiment(ctx, "contract")
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.GetOrCreateExperiment(ctx, "contract")
	if err != nil || again.ID != exp.ID {
		t.Fatalf("get-or-create is not stable: %v %v %v", exp, again, err)
	}
	info, err := c.StartRun(ctx, exp.ID, tracker.RunOptions{Name: "r1", Source: tracker.Source{User: "u", Name: "src", GitCommit: "deadbeef"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(info.ArtifactURI, "mlflow-artifacts:/"+exp.ID+"/"+info.ID) || info.Status != tracker.StatusRunning {
		t.Fatalf("run info %+v", info)
	}
	// 2500 metrics, 250 params and 150 tags need several chunks.
	var ms []tracker.Metric
	for i := 0; i < 2500; i++ {
		ms = append(ms, tracker.Metric{Key: "loss", Value: float64(i), Timestamp: int64(1000 + i), Step: int64(i)})
	}
	ms = append(ms, tracker.Metric{Key: "nan", Value: math.NaN(), Timestamp: 1, Step: 0},
		tracker.Metric{Key: "inf", Value: math.Inf(1), Timestamp: 1}, tracker.Metric{Key: "ninf", Value: math.Inf(-1), Timestamp: 1})
	var ps []tracker.Param
	for i := 0; i < 250; i++ {
		ps = append(ps, tracker.Param{Key: fmt.Sprintf("p%d", i), Value: fmt.Sprint(i)})
	}
	var ts []tracker.Tag
	for i := 0; i < 150; i++ {
		ts = append(ts, tracker.Tag{Key: fmt.Sprintf("t%d", i), Value: "v"})
	}
	if err := c.LogBatch(ctx, info.ID, ms, ps, ts); err != nil {
		t.Fatal(err)
	}
	if n := srv.Calls("POST runs/log-batch"); n != 3 {
		t.Errorf("log-batch requests = %d, want 3 (chunks of ≤1000 metrics, ≤100 params, ≤100 tags, ≤1000 items)", n)
	}
	ds := tracker.Dataset{Name: "chicago", Digest: "sha256:ab", SourceType: "local", Source: "data/chicago.csv", Context: "training"}
	if err := c.LogInputs(ctx, info.ID, []tracker.Dataset{ds}); err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte{0, 1, 2, 255}, 50000)
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
	if len(run.Params) != 250 || run.Tags["t149"] != "v" || run.Info.Status != tracker.StatusFinished || run.Info.EndTime != 5000 {
		t.Errorf("run: %d params, status %s, end %d", len(run.Params), run.Info.Status, run.Info.EndTime)
	}
	for k, want := range map[string]string{tracker.TagRunName: "r1", tracker.TagUser: "u", tracker.TagSourceName: "src", tracker.TagSourceType: "LOCAL", tracker.TagGitCommit: "deadbeef"} {
		if run.Tags[k] != want {
			t.Errorf("system tag %s = %q, want %q", k, run.Tags[k], want)
		}
	}
	if m := run.Metrics["loss"]; m.Value != 2499 || m.Step != 2499 {
		t.Errorf("latest loss %+v", m)
	}
	if !math.IsNaN(run.Metrics["nan"].Value) || !math.IsInf(run.Metrics["inf"].Value, 1) || !math.IsInf(run.Metrics["ninf"].Value, -1) {
		t.Errorf("NaN/Inf round trip: %v %v %v", run.Metrics["nan"], run.Metrics["inf"], run.Metrics["ninf"])
	}
	if len(run.Datasets) != 1 || run.Datasets[0] != ds {
		t.Errorf("datasets %+v", run.Datasets)
	}
	hist, err := c.MetricHistory(ctx, info.ID, "loss")
	if err != nil || len(hist) != 2500 || hist[10].Timestamp != 1010 || hist[10].Step != 10 {
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
	rc, err := c.OpenArtifact(ctx, info.ID, "model/model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	if !bytes.Equal(got, payload) {
		t.Error("artifact bytes differ")
	}
	runs, err := c.SearchRuns(ctx, tracker.SearchQuery{ExperimentIDs: []string{exp.ID}, Filter: "params.p3 = '3' and metrics.loss > 100"})
	if err != nil || len(runs) != 1 {
		t.Fatalf("search: %d runs, %v", len(runs), err)
	}
	all, err := c.SearchRuns(ctx, tracker.SearchQuery{})
	if err != nil || len(all) != 1 {
		t.Fatalf("search all experiments: %d, %v", len(all), err)
	}

	// Registry.
	if err := c.CreateRegisteredModel(ctx, "ridership"); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateRegisteredModel(ctx, "ridership"); err != nil {
		t.Fatalf("existing model must not be an error: %v", err)
	}
	mv, err := c.CreateModelVersion(ctx, "ridership", info.ID, "model")
	if err != nil || mv.Version != "1" || mv.Source != info.ArtifactURI+"/model" {
		t.Fatalf("version %+v %v", mv, err)
	}
	if err := c.SetAlias(ctx, "ridership", "champion", mv.Version); err != nil {
		t.Fatal(err)
	}
	byAlias, err := c.GetModelVersionByAlias(ctx, "ridership", "champion")
	if err != nil || byAlias.Version != "1" || byAlias.RunID != info.ID {
		t.Fatalf("alias: %+v %v", byAlias, err)
	}
	if _, err := c.GetModelVersionByAlias(ctx, "ridership", "nope"); !errors.Is(err, tracker.ErrNotFound) {
		t.Errorf("unknown alias: %v, want ErrNotFound", err)
	}
	found, err := c.SearchModelVersions(ctx, fmt.Sprintf("name='ridership' and run_id='%s'", info.ID))
	if err != nil || len(found) != 1 {
		t.Errorf("search versions: %+v %v", found, err)
	}
}

func TestTypedErrors(t *testing.T) {
	ctx := context.Background()
	c, _ := newClient(t, nil)
	info := startRun(t, c)
	tests := []struct {
		name string
		call func() error
		kind error
		code string
	}{
		{"unknown run", func() error { _, err := c.GetRun(ctx, "0123"); return err }, tracker.ErrNotFound, "RESOURCE_DOES_NOT_EXIST"},
		{"unknown experiment", func() error { _, err := c.GetExperimentByName(ctx, "nope"); return err }, tracker.ErrNotFound, "RESOURCE_DOES_NOT_EXIST"},
		{"param changed", func() error {
			if err := c.LogBatch(ctx, info.ID, nil, []tracker.Param{{Key: "a", Value: "1"}}, nil); err != nil {
				return err
			}
			return c.LogBatch(ctx, info.ID, nil, []tracker.Param{{Key: "a", Value: "2"}}, nil)
		}, tracker.ErrInvalid, "INVALID_PARAMETER_VALUE"},
		{"same param again is fine", func() error { return c.LogBatch(ctx, info.ID, nil, []tracker.Param{{Key: "a", Value: "1"}}, nil) }, nil, ""},
		{"bad key", func() error {
			return c.LogBatch(ctx, info.ID, []tracker.Metric{{Key: "bad*key", Value: 1, Timestamp: 1}}, nil, nil)
		}, tracker.ErrInvalid, "INVALID_PARAMETER_VALUE"},
		{"bad filter", func() error {
			_, err := c.SearchRuns(ctx, tracker.SearchQuery{ExperimentIDs: []string{"0"}, Filter: "metrics.x < 'a'"})
			return err
		}, tracker.ErrInvalid, "INVALID_PARAMETER_VALUE"},
		{"version of unknown model", func() error { _, err := c.CreateModelVersion(ctx, "nope", info.ID, "model"); return err }, tracker.ErrNotFound, "RESOURCE_DOES_NOT_EXIST"},
		{"bad status", func() error { return c.EndRun(ctx, info.ID, "DONE", time.Time{}) }, tracker.ErrInvalid, ""},
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
			if tc.code != "" && (!errors.As(err, &te) || te.Code != tc.code) {
				t.Fatalf("err %v, want code %s", err, tc.code)
			}
		})
	}
}

// TestServerShapes checks the test server answers like MLflow: JSON errors
// for API errors, an HTML 404 for unknown routes and 405 for wrong methods.
func TestServerShapes(t *testing.T) {
	_, srv := newClient(t, nil)
	tests := []struct {
		method, path, ctype, body string
		status                    int
		contains                  string
	}{
		{"GET", "/api/2.0/mlflow/nope", "", "", 404, "<!doctype html>"},
		{"GET", "/api/2.0/mlflow/runs/create", "", "", 405, "Method Not Allowed"},
		{"POST", "/api/2.0/mlflow/runs/create", "text/plain", "{}", 400, `"error_code":"INVALID_PARAMETER_VALUE"`},
		{"POST", "/api/2.0/mlflow/runs/log-batch", "application/json", "{", 400, `"error_code":"INVALID_PARAMETER_VALUE"`},
		{"POST", "/api/2.0/mlflow/runs/log-batch", "application/json", "{}", 400, "Missing value for required parameter 'run_id'"},
		{"GET", "/api/2.0/mlflow/runs/get?run_id=x", "", "", 404, `"error_code":"RESOURCE_DOES_NOT_EXIST"`},
		{"POST", "/api/2.0/mlflow/experiments/create", "application/json", `{"name":"Default"}`, 400, `"RESOURCE_ALREADY_EXISTS"`},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.contains) {
				t.Fatalf("%d %s, want %d containing %q", resp.StatusCode, b, tc.status, tc.contains)
			}
		})
	}
	// The client maps an HTML 404 to ErrNotFound with a hint.
	cfg := mlflow.DefaultConfig()
	cfg.TrackingURI = srv.URL + "/wrong-prefix"
	c, _ := mlflow.New(mlflow.Options{Config: cfg})
	_, err := c.GetExperimentByName(context.Background(), "x")
	if !errors.Is(err, tracker.ErrNotFound) || !strings.Contains(err.Error(), "non-JSON") {
		t.Errorf("html 404: %v", err)
	}
}

func TestRetryPolicy(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		fault     func(n int) mlflowtest.Fault
		call      func(c *mlflow.Client) error
		wantKind  error
		wantTries int32
	}{
		{"503 burst recovers", func(n int) mlflowtest.Fault {
			if n <= 2 {
				return mlflowtest.Fault{Kind: mlflowtest.Unavailable}
			}
			return mlflowtest.Fault{}
		}, func(c *mlflow.Client) error { _, err := c.GetOrCreateExperiment(ctx, "x"); return err }, nil, 5},
		{"503 forever gives up as unavailable", func(int) mlflowtest.Fault { return mlflowtest.Fault{Kind: mlflowtest.Unavailable} },
			func(c *mlflow.Client) error { _, err := c.GetExperimentByName(ctx, "x"); return err }, tracker.ErrUnavailable, 4},
		{"4xx is never retried", nil, func(c *mlflow.Client) error { _, err := c.GetRun(ctx, "missing"); return err }, tracker.ErrNotFound, 1},
		{"reset on an idempotent GET is retried", func(n int) mlflowtest.Fault {
			if n == 1 {
				return mlflowtest.Fault{Kind: mlflowtest.ResetBefore}
			}
			return mlflowtest.Fault{}
		}, func(c *mlflow.Client) error { _, err := c.GetExperimentByName(ctx, "Default"); return err }, nil, 2},
		{"slow answer times out, then succeeds", func(n int) mlflowtest.Fault {
			if n == 1 {
				return mlflowtest.Fault{Kind: mlflowtest.SlowAfter, Delay: 2 * time.Second}
			}
			return mlflowtest.Fault{}
		}, func(c *mlflow.Client) error { _, err := c.GetExperimentByName(ctx, "Default"); return err }, nil, 2},
		{"runs/create is not replayed after an ambiguous reset", func(n int) mlflowtest.Fault {
			return mlflowtest.Fault{Kind: mlflowtest.ResetAfter}
		}, func(c *mlflow.Client) error {
			_, err := c.StartRun(ctx, "0", tracker.RunOptions{Name: "x"})
			return err
		}, tracker.ErrUnavailable, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, srv := newClient(t, nil)
			var tries atomic.Int32
			srv.SetFault(func(n int, r *http.Request) mlflowtest.Fault {
				tries.Add(1)
				if tc.fault == nil {
					return mlflowtest.Fault{}
				}
				return tc.fault(n)
			})
			err := tc.call(c)
			if tc.wantKind == nil && err != nil || tc.wantKind != nil && !errors.Is(err, tc.wantKind) {
				t.Fatalf("err %v, want %v", err, tc.wantKind)
			}
			if got := tries.Load(); got != tc.wantTries {
				t.Errorf("%d requests, want %d", got, tc.wantTries)
			}
		})
	}
}

func TestAuth(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		server   func(*mlflowtest.Server)
		client   func(*mlflow.Config)
		wantKind error
	}{
		{"bearer", func(s *mlflowtest.Server) { s.Token = "tok" }, func(c *mlflow.Config) { c.Token = "tok" }, nil},
		{"bearer wrong", func(s *mlflowtest.Server) { s.Token = "tok" }, func(c *mlflow.Config) { c.Token = "bad" }, tracker.ErrPermission},
		{"basic", func(s *mlflowtest.Server) { s.Username, s.Password = "u", "p" }, func(c *mlflow.Config) { c.Username, c.Password = "u", "p" }, nil},
		{"missing", func(s *mlflowtest.Server) { s.Username, s.Password = "u", "p" }, nil, tracker.ErrPermission},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, srv := newClient(t, tc.client)
			tc.server(srv)
			_, err := c.GetExperimentByName(ctx, "Default")
			if tc.wantKind == nil && err != nil || tc.wantKind != nil && !errors.Is(err, tc.wantKind) {
				t.Fatalf("err %v, want %v", err, tc.wantKind)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	base := mlflow.DefaultConfig()
	base.TrackingURI = "http://127.0.0.1:5000"
	tests := []struct {
		name string
		mod  func(*mlflow.Config)
		ok   bool
	}{
		{"default", func(*mlflow.Config) {}, true},
		{"no uri", func(c *mlflow.Config) { c.TrackingURI = "" }, false},
		{"file uri", func(c *mlflow.Config) { c.TrackingURI = "file:///tmp/mlruns" }, false},
		{"token and basic", func(c *mlflow.Config) { c.Token, c.Username, c.Password = "t", "u", "p" }, false},
		{"user without password", func(c *mlflow.Config) { c.Username = "u" }, false},
		{"zero timeout", func(c *mlflow.Config) { c.Timeout = 0 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mod(&c)
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, ok want %v", err, tc.ok)
			}
		})
	}
	if s := fmt.Sprint(mlflow.Secret("x")); s != "<secret>" {
		t.Errorf("secret prints %q", s)
	}
}

func TestChunk(t *testing.T) {
	mk := func(n int) []tracker.Metric { return make([]tracker.Metric, n) }
	pk := func(n int) []tracker.Param { return make([]tracker.Param, n) }
	tk := func(n int) []tracker.Tag { return make([]tracker.Tag, n) }
	tests := []struct {
		m, p, tg int
		want     int
	}{
		{0, 0, 0, 0}, {1000, 0, 0, 1}, {1001, 0, 0, 2}, {0, 101, 0, 2}, {900, 100, 100, 2}, {800, 100, 100, 1}, {3000, 250, 30, 4},
	}
	for _, tc := range tests {
		chunks := mlflow.Chunk(mk(tc.m), pk(tc.p), tk(tc.tg))
		if len(chunks) != tc.want {
			t.Errorf("%d/%d/%d: %d chunks, want %d", tc.m, tc.p, tc.tg, len(chunks), tc.want)
		}
		var m, p, tg int
		for _, c := range chunks {
			if len(c.Metrics) > 1000 || len(c.Params) > 100 || len(c.Tags) > 100 || len(c.Metrics)+len(c.Params)+len(c.Tags) > 1000 {
				t.Errorf("chunk over the limits: %d/%d/%d", len(c.Metrics), len(c.Params), len(c.Tags))
			}
			m, p, tg = m+len(c.Metrics), p+len(c.Params), tg+len(c.Tags)
		}
		if m != tc.m || p != tc.p || tg != tc.tg {
			t.Errorf("lost items: %d/%d/%d", m, p, tg)
		}
	}
}

func TestArtifactAPIPath(t *testing.T) {
	tests := []struct{ uri, rel, want string }{
		{"mlflow-artifacts:/1/abc/artifacts", "model/model.onnx", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model/model.onnx"},
		{"mlflow-artifacts://mlflow:5000/1/abc/artifacts", "a b.txt", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/a%20b.txt"},
		{"s3://bucket/1/abc/artifacts", "x", ""},
	}
	for _, tc := range tests {
		got, err := mlflow.ArtifactAPIPath(tc.uri, tc.rel)
		if tc.want == "" {
			if !errors.Is(err, tracker.ErrInvalid) {
				t.Errorf("%s: err %v, want ErrInvalid", tc.uri, err)
			}
			continue
		}
		if got != tc.want || err != nil {
			t.Errorf("%s + %s = %q %v, want %q", tc.uri, tc.rel, got, err, tc.want)
		}
	}
}

// TestDefensiveDecoding reads answers with numbers as strings, ids as
// numbers, "NaN" and the huge float MLflow uses for +Inf.
func TestDefensiveDecoding(t *testing.T) {
	body := `{"run":{"info":{"run_uuid":"r1","experiment_id":7,"status":"FINISHED","start_time":"1700000000000","end_time":1700000001000,
		"artifact_uri":"mlflow-artifacts:/7/r1/artifacts","lifecycle_stage":"active"},
		"data":{"metrics":[{"key":"nan","value":"NaN","timestamp":"1","step":"5"},{"key":"inf","value":1.7976931348623157e308,"timestamp":1},
		{"key":"ninf","value":-1.7976931348623157e308,"timestamp":1},{"key":"s","value":"-Infinity","timestamp":1},{"key":"x","value":0.5,"timestamp":1,"step":2}],
		"params":[{"key":"p","value":"1"}],"tags":[{"key":"mlflow.runName","value":"named-by-tag"}]},"inputs":{}}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	}))
	defer srv.Close()
	cfg := mlflow.DefaultConfig()
	cfg.TrackingURI = srv.URL
	c, _ := mlflow.New(mlflow.Options{Config: cfg})
	r, err := c.GetRun(context.Background(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	if r.Info.ID != "r1" || r.Info.ExperimentID != "7" || r.Info.StartTime != 1700000000000 || r.Info.EndTime != 1700000001000 || r.Info.Name != "named-by-tag" {
		t.Errorf("info %+v", r.Info)
	}
	m := r.Metrics
	if !math.IsNaN(m["nan"].Value) || m["nan"].Step != 5 || !math.IsInf(m["inf"].Value, 1) || !math.IsInf(m["ninf"].Value, -1) || !math.IsInf(m["s"].Value, -1) || m["x"].Value != 0.5 {
		t.Errorf("metrics %+v", m)
	}
}
