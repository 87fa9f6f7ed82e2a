package mlflow_test

import (
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

	"github.com/flywheel-ml/flywheel/internal/configtest"
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

// TestNonJSONAnswer: a tracking URI that is not an MLflow API answers HTML;
// the client maps its 404 to ErrNotFound with a hint. (What MLflow answers
// is checked against the real server by the contract suite.)
func TestNonJSONAnswer(t *testing.T) {
	_, srv := newClient(t, nil)
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
	valid := func() mlflow.Config {
		c := mlflow.DefaultConfig()
		c.TrackingURI = "http://127.0.0.1:5000"
		return c
	}
	configtest.Check(t, valid, mlflow.Config.Validate, []configtest.Case[mlflow.Config]{
		{Name: "default", Edit: func(*mlflow.Config) {}},
		{Name: "no uri", Edit: func(c *mlflow.Config) { c.TrackingURI = "" }, Want: "must be an http(s) URL"},
		{Name: "file uri", Edit: func(c *mlflow.Config) { c.TrackingURI = "file:///tmp/mlruns" }, Want: "must be an http(s) URL"},
		{Name: "token and basic", Edit: func(c *mlflow.Config) { c.Token, c.Username, c.Password = "t", "u", "p" }, Want: "at most one of token"},
		{Name: "user without password", Edit: func(c *mlflow.Config) { c.Username = "u" }, Want: "set together"},
		{Name: "zero timeout", Edit: func(c *mlflow.Config) { c.Timeout = 0 }, Want: "timeout"},
		{Name: "negative retries", Edit: func(c *mlflow.Config) { c.RetryMax = -1 }, Want: "retry_max"},
		{Name: "retry waits", Edit: func(c *mlflow.Config) { c.RetryWaitMax = c.RetryWaitMin / 2 }, Want: "retry_wait_min"},
	})
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
