package api_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/batch"
	"github.com/flywheel-ml/flywheel/server/metrics"
	"github.com/flywheel-ml/flywheel/server/repository"
	"github.com/flywheel-ml/flywheel/server/tensor"
)

// echo is a model without ONNX Runtime: y = x.
type echo struct{}

func (echo) Run(_ context.Context, in []tensor.Tensor) ([]tensor.Tensor, error) {
	out := in[0]
	out.Name = "y"
	return []tensor.Tensor{out}, nil
}
func (echo) Inputs() []tensor.Spec {
	return []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 2}}}
}
func (echo) Outputs() []tensor.Spec {
	return []tensor.Spec{{Name: "y", DataType: tensor.FP32, Shape: []int64{-1, 2}}}
}
func (echo) Close() error { return nil }

// queued reports a queue time the way a batcher would.
type queued struct{ repository.Runner }

func (q queued) RunTimed(ctx context.Context, in []tensor.Tensor) ([]tensor.Tensor, repository.Timing, error) {
	out, err := q.Run(ctx, in)
	return out, repository.Timing{Queue: 2 * time.Millisecond, Compute: time.Millisecond, Executions: 1}, err
}

// TestTimedRunnerWithoutORT runs the handler path on a fake model wrapped
// like a batcher would be, checking its queue time reaches the metrics.
func TestTimedRunnerWithoutORT(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "echo", "1"), 0o755)
	os.WriteFile(filepath.Join(root, "echo", "1", "model.onnx"), []byte("fake"), 0o644)
	rc := repository.DefaultConfig()
	rc.Root = root
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	repo, err := repository.New(repository.Options{Config: rc, Metrics: m,
		Loader: func(string, ortOpts) (repository.Loaded, error) { return echo{}, nil },
		Wrap: func(_ string, _ int64, _ repository.ModelConfig, r repository.Runner) repository.Runner {
			return queued{r}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Options{Repository: repo, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/v2/models/echo/infer", strings.NewReader(`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`))
	req.Header.Set("Content-Type", "application/json")
	res, err := srv.App().Test(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("%v %v", res, err)
	}
	if got := testutil.ToFloat64(m.Executions.WithLabelValues("echo", "1")); got != 1 {
		t.Errorf("executions %v", got)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "flywheel_inference_queue_duration_seconds" {
			if s := mf.GetMetric()[0].GetHistogram().GetSampleSum(); s != 0.002 {
				t.Errorf("queue sum %v, want 0.002", s)
			}
			return
		}
	}
	t.Error("no queue histogram")
}

// failing is a runner that always fails with err.
type failing struct{ err error }

func (f failing) Run(context.Context, []tensor.Tensor) ([]tensor.Tensor, error) { return nil, f.err }

// TestBatcherErrorsMapTo503 checks the batcher's sentinel errors survive the
// handler's wrapping: a full queue is 503 with Retry-After, a closed one 503.
func TestBatcherErrorsMapTo503(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		code       int
		retryAfter string
	}{
		{"queue full", batch.ErrQueueFull, 503, "1"},
		{"closed", batch.ErrClosed, 503, ""},
		{"other", errors.New("boom"), 500, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			os.MkdirAll(filepath.Join(root, "echo", "1"), 0o755)
			os.WriteFile(filepath.Join(root, "echo", "1", "model.onnx"), []byte("fake"), 0o644)
			rc := repository.DefaultConfig()
			rc.Root = root
			repo, err := repository.New(repository.Options{Config: rc,
				Loader: func(string, ortOpts) (repository.Loaded, error) { return echo{}, nil },
				Wrap: func(string, int64, repository.ModelConfig, repository.Runner) repository.Runner {
					return failing{tc.err}
				}})
			if err != nil {
				t.Fatal(err)
			}
			if err := repo.Scan(context.Background()); err != nil {
				t.Fatal(err)
			}
			srv, err := api.New(api.Options{Repository: repo})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest("POST", "/v2/models/echo/infer", strings.NewReader(`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`))
			res, err := srv.App().Test(req)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tc.code || res.Header.Get("Retry-After") != tc.retryAfter {
				t.Fatalf("status %d Retry-After %q, want %d %q", res.StatusCode, res.Header.Get("Retry-After"), tc.code, tc.retryAfter)
			}
		})
	}
}
