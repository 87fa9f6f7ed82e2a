package drift

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-ml/flywheel/internal/configtest"
	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/internal/modelrepo"
)

func newMonitor(t *testing.T, cfg Config) (*Monitor, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := New(Options{Config: cfg, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

// quarters is a reference with 4 equal bins over [0, 4).
var quarters = modelrepo.Histogram{Edges: []float64{0, 1, 2, 3, 4}, Proportions: []float64{0.25, 0.25, 0.25, 0.25}}

// rows returns n rows of (a, b) where a cycles through the bins with the
// given counts per 100 rows and b is always in bin 1.
func rows(n int, per100 [4]int) (inputs, preds []float32) {
	var seq []float32
	for bin, c := range per100 {
		for range c {
			seq = append(seq, float32(bin)+0.5)
		}
	}
	for i := range n {
		v := seq[i%len(seq)]
		inputs = append(inputs, v, 1.5)
		preds = append(preds, v)
	}
	return inputs, preds
}

func TestMonitorPSIMatchesDirectComputation(t *testing.T) {
	ref := &modelrepo.Reference{Features: map[string]modelrepo.Histogram{"a": quarters, "b": quarters}, Prediction: &quarters}
	tests := []struct {
		name   string
		window int
		feed   [][4]int // successive batches of 100 rows with these bin counts
		want   [4]int   // bin counts the window should end with (per 100)
	}{
		{"matches reference", 100, [][4]int{{25, 25, 25, 25}}, [4]int{25, 25, 25, 25}},
		{"skewed", 100, [][4]int{{10, 20, 30, 40}}, [4]int{10, 20, 30, 40}},
		{"window keeps only the newest rows", 100, [][4]int{{100, 0, 0, 0}, {0, 0, 50, 50}}, [4]int{0, 0, 50, 50}},
		{"window wraps mid batch", 200, [][4]int{{100, 0, 0, 0}, {100, 0, 0, 0}, {0, 50, 0, 50}, {0, 50, 0, 50}}, [4]int{0, 50, 0, 50}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Window, cfg.MinRows = tt.window, 10
			m, _ := newMonitor(t, cfg)
			st := m.Add("m", 1, []string{"a", "b"}, ref)
			if !st.Enabled {
				t.Fatalf("drift not enabled: %s", st.Reason)
			}
			for _, batch := range tt.feed {
				in, pr := rows(100, batch)
				if !m.Observe("m", 1, in, pr) {
					t.Fatal("Observe dropped")
				}
			}
			m.Sync()
			st, _ = m.Status("m", 1)
			actual := make([]float64, 4)
			for i, c := range tt.want {
				actual[i] = float64(c) / 100
			}
			want := PSI(quarters.Proportions, actual, DefaultEpsilon)
			wantB := PSI(quarters.Proportions, []float64{0, 1, 0, 0}, DefaultEpsilon)
			if st.Rows != tt.window {
				t.Errorf("rows = %d, want %d", st.Rows, tt.window)
			}
			if got := st.Features["a"]; math.Abs(got-want) > 1e-9 {
				t.Errorf("PSI(a) = %g, want %g", got, want)
			}
			if got := st.Features["b"]; math.Abs(got-wantB) > 1e-9 {
				t.Errorf("PSI(b) = %g, want %g", got, wantB)
			}
			if st.Prediction == nil || math.Abs(*st.Prediction-want) > 1e-9 {
				t.Errorf("prediction PSI = %v, want %g", st.Prediction, want)
			}
		})
	}
}

func TestMonitorMetrics(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Window, cfg.MinRows = 100, 50
	m, reg := newMonitor(t, cfg)
	ref := &modelrepo.Reference{Features: map[string]modelrepo.Histogram{"a": quarters}} // no "b", no prediction
	m.Add("ridership", 2, []string{"a", "b"}, ref)
	if st := m.Add("other", 1, []string{"x"}, nil); st.Enabled || !strings.Contains(st.Reason, "no reference") {
		t.Fatalf("version without reference: %+v", st)
	}
	if m.Observe("other", 1, []float32{1}, nil) {
		t.Error("Observe of a version without reference was queued")
	}

	all, _ := rows(100, [4]int{25, 25, 25, 25})
	m.Observe("ridership", 2, all[:80], nil) // 40 rows of (a, b)
	m.Sync()
	// Below MinRows: only the window size is exported.
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP flywheel_drift_window_rows Rows in the drift window of each served version with a reference.
# TYPE flywheel_drift_window_rows gauge
flywheel_drift_window_rows{model="ridership",version="2"} 40
`), "flywheel_drift_window_rows", "flywheel_feature_drift_psi", "flywheel_prediction_drift_psi"); err != nil {
		t.Fatal(err)
	}
	m.Observe("ridership", 2, all[80:], nil)
	m.Sync()
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP flywheel_drift_window_rows Rows in the drift window of each served version with a reference.
# TYPE flywheel_drift_window_rows gauge
flywheel_drift_window_rows{model="ridership",version="2"} 100
# HELP flywheel_feature_drift_psi Population Stability Index of each input feature: the recent window against the model card's reference.
# TYPE flywheel_feature_drift_psi gauge
flywheel_feature_drift_psi{feature="a",model="ridership",version="2"} 0
`), "flywheel_drift_window_rows", "flywheel_feature_drift_psi", "flywheel_prediction_drift_psi"); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
	m.Remove("ridership", 2)
	if n, _ := testutil.GatherAndCount(reg, "flywheel_drift_window_rows"); n != 0 {
		t.Fatalf("removed version still exported (%d series)", n)
	}
}

func TestObserveNeverBlocks(t *testing.T) {
	cfg := DefaultConfig()
	cfg.QueueSize = 4
	m, reg := newMonitor(t, cfg)
	m.Add("m", 1, []string{"a"}, &modelrepo.Reference{Features: map[string]modelrepo.Histogram{"a": quarters}})
	// Nothing drains the queue (Run is not started).
	queued := harness.NeverBlocks(t, "Observe on a full queue", 1000, func(int) bool {
		return m.Observe("m", 1, []float32{1}, []float32{1})
	})
	if queued != 4 {
		t.Fatalf("queued %d, want 4 (queue size)", queued)
	}
	if got := testutil.ToFloat64(m.dropped); got != 996 {
		t.Fatalf("dropped = %g, want 996", got)
	}
	// Run drains the queue and stops with its context.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	harness.WaitUntil(t, "Run to apply the queued rows", 5*time.Second, func() bool {
		st, _ := m.Status("m", 1)
		return st.Rows == 4
	})
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	_ = reg
}

func TestConfigValidate(t *testing.T) {
	configtest.Check(t, DefaultConfig, Config.Validate, []configtest.Case[Config]{
		{Name: "default", Edit: func(*Config) {}, Want: ""},
		{Name: "window", Edit: func(c *Config) { c.Window = 0 }, Want: "window must be positive"},
		{Name: "min rows", Edit: func(c *Config) { c.MinRows = 2000 }, Want: "min_rows"},
		{Name: "epsilon", Edit: func(c *Config) { c.Epsilon = 0 }, Want: "epsilon"},
		{Name: "queue", Edit: func(c *Config) { c.QueueSize = 0 }, Want: "queue_size"},
	})
}
