package monitor

import (
	"context"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-ml/flywheel/internal/configtest"
	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/predlog"
	"github.com/flywheel-ml/flywheel/server/repository"
	"github.com/flywheel-ml/flywheel/server/tensor"
)

func testCard() *modelrepo.Card {
	h := modelrepo.Histogram{Edges: []float64{0, 1, 2}, Proportions: []float64{0.5, 0.5}}
	return &modelrepo.Card{Name: "m", Version: 1, Task: "regression", Thresholds: map[string]float64{"mae": 0.5},
		Inputs:    []modelrepo.Tensor{{Name: "x", DataType: "FP32", Shape: []int64{-1, 2}, Features: []string{"a", "b"}}},
		Reference: &modelrepo.Reference{Features: map[string]modelrepo.Histogram{"a": h, "b": h}, Prediction: &h}}
}

func observation(id string, rows int) api.Observation {
	in := make([]float32, 2*rows)
	out := make([]float32, rows)
	for i := range rows {
		in[2*i], in[2*i+1], out[i] = 0.5, 1.5, float32(i)
	}
	return api.Observation{Model: "m", Version: 1, RequestID: id, Time: time.Now(), Protocol: "oip",
		Parameters: map[string]any{"date": "2016-08-01"}, Card: testCard(),
		Inputs:  []tensor.Tensor{{Name: "x", DataType: tensor.FP32, Shape: []int64{int64(rows), 2}, Data: in}},
		Outputs: []tensor.Tensor{{Name: "y", DataType: tensor.FP32, Shape: []int64{int64(rows), 1}, Data: out}}}
}

// A version that starts serving is measured and logged; its rows get ids
// <request id>/<i>; Close writes what is queued; a version that stops
// serving exports no drift.
func TestMonitorLifecycle(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DB = filepath.Join(t.TempDir(), "sub", "flywheel.db")
	cfg.Predlog.FlushInterval = time.Hour // only Close writes
	cfg.Drift.MinRows = 1
	reg := prometheus.NewPedanticRegistry()
	m, err := New(context.Background(), Options{Config: cfg, AdminToken: "tok", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx) }()
	m.OnChange(repository.Change{Model: "m", Version: 1, Ready: true, Card: testCard()})
	m.Observe(observation("single", 1))
	m.Observe(observation("multi", 3))
	m.Observe(api.Observation{Model: "m", Version: 1, RequestID: "two-inputs", Inputs: make([]tensor.Tensor, 2), Outputs: make([]tensor.Tensor, 1)})
	deadline := time.Now().Add(5 * time.Second)
	for gauge(reg, "flywheel_drift_window_rows") != 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := gauge(reg, "flywheel_drift_window_rows"); n != 4 {
		t.Fatalf("drift window holds %g rows, want 4", n)
	}
	if n, _ := testutil.GatherAndCount(reg, "flywheel_model_error_threshold", "flywheel_feedback_labels_total"); n != 2 {
		t.Errorf("%d quality series for the version, want 2 (threshold and labels at 0)", n)
	}
	m.OnChange(repository.Change{Model: "m", Version: 1})
	if n, _ := testutil.GatherAndCount(reg, "flywheel_feature_drift_psi", "flywheel_drift_window_rows"); n != 0 {
		t.Errorf("%d drift series after the version stopped serving, want 0", n)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := predlog.Open(context.Background(), cfg.DB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, id := range []string{"single", "multi/0", "multi/1", "multi/2"} {
		rec, err := db.Get(context.Background(), id)
		if err != nil || rec.Features["a"] != 0.5 || rec.Parameters["date"] != "2016-08-01" {
			t.Errorf("logged %s: %+v %v", id, rec, err)
		}
	}
	if n, _ := db.Count(context.Background()); n != 4 {
		t.Errorf("%d rows logged, want 4", n)
	}
}

// gauge is the value of the single series of a gauge (-1 when absent).
func gauge(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

func TestRoutes(t *testing.T) {
	cases := []struct {
		name, db string
		want     string
	}{
		{"prediction log on", filepath.Join(t.TempDir(), "p.db"), "GET /v1/feedback/export GET /v1/predictions/* POST /v1/feedback"},
		{"prediction log off", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.DB = c.db
			m, err := New(context.Background(), Options{Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			app := fiber.New()
			m.Register(app)
			var got []string
			for _, r := range app.GetRoutes(true) {
				if r.Method != fiber.MethodHead {
					got = append(got, r.Method+" "+r.Path)
				}
			}
			sort.Strings(got)
			if s := strings.Join(got, " "); s != c.want {
				t.Errorf("routes %q, want %q", s, c.want)
			}
		})
	}
}

// TestConfigValidate: nested configurations' errors name their section.
func TestConfigValidate(t *testing.T) {
	configtest.Check(t, DefaultConfig, Config.Validate, []configtest.Case[Config]{
		{Name: "defaults", Edit: func(*Config) {}},
		{Name: "sample rate", Edit: func(c *Config) { c.Predlog.SampleRate = 0 }, Want: "prediction log: sample_rate"},
		{Name: "sample rate ignored without a database", Edit: func(c *Config) { c.DB, c.Predlog.SampleRate = "", 0 }},
		{Name: "busy timeout", Edit: func(c *Config) { c.BusyTimeout = -time.Second }, Want: "busy_timeout must not be negative, got -1s"},
		{Name: "drift window", Edit: func(c *Config) { c.Drift.Window = 0 }, Want: "drift: window"},
		{Name: "feedback items", Edit: func(c *Config) { c.FeedbackMaxItems = 0 }, Want: "feedback_max_items"},
	})
}
