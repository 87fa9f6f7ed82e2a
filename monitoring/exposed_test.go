package monitoring

import (
	"context"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/drift"
	"github.com/flywheel-ml/flywheel/server/feedback"
	"github.com/flywheel-ml/flywheel/server/predlog"
)

// monitorMetrics are the metrics CONTRACTS.md assigns to the monitor part.
var monitorMetrics = []string{
	"flywheel_feature_drift_psi", "flywheel_prediction_drift_psi", "flywheel_drift_window_rows",
	"flywheel_feedback_labels_total", "flywheel_feedback_absolute_error_total", "flywheel_feedback_squared_error_total",
	"flywheel_feedback_correct_total", "flywheel_model_error_threshold",
	"flywheel_feedback_store_labels", "flywheel_feedback_store_absolute_error", "flywheel_feedback_store_squared_error",
	"flywheel_predlog_dropped_total", "flywheel_predlog_queue_length", "flywheel_predlog_written_total",
}

// TestMonitorMetricsExposed builds the monitor's components on one registry,
// as serve will, and checks that a gather exposes every monitor metric of
// the contract with the labels the rules and the dashboard use, and that the
// metrics pass client_golang's lint.
func TestMonitorMetricsExposed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewPedanticRegistry()
	db, err := predlog.Open(ctx, filepath.Join(t.TempDir(), "flywheel.db"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l, err := predlog.New(predlog.Options{Config: predlog.DefaultConfig(), Store: db, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	cfg := drift.DefaultConfig()
	cfg.MinRows = 1
	m, err := drift.New(drift.Options{Config: cfg, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	h := modelrepo.Histogram{Edges: []float64{0, 1, 2}, Proportions: []float64{0.5, 0.5}}
	c := &modelrepo.Card{Name: "iris", Version: 1, Task: "classification", Thresholds: map[string]float64{"mae": 0.5},
		Inputs:    []modelrepo.Tensor{{Name: "x", Features: []string{"a"}}},
		Reference: &modelrepo.Reference{Features: map[string]modelrepo.Histogram{"a": h}, Prediction: &h}}
	store, err := feedback.New(feedback.Options{DB: db, Log: l, Registerer: reg,
		Cards: func(string, int) *modelrepo.Card { return c }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := feedback.NewStoreMetrics(db, time.Second, reg, nil); err != nil {
		t.Fatal(err)
	}
	m.Add(c.Name, c.Version, c.FeatureNames(), c.Reference)
	store.AddVersion(c.Name, c.Version, c)
	m.Observe("iris", 1, []float32{0.5}, []float32{1})
	m.Sync()
	l.Record(predlog.Entry{ID: "p", Model: "iris", Version: 1, Features: []float64{0.5}, Outputs: []float64{1}})
	v := 1.0
	if _, err := store.Add(ctx, []feedback.Label{{ID: "p", Value: &v}}); err != nil {
		t.Fatal(err)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string][]string{}
	for _, mf := range mfs {
		var ls []string
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			ls = append(ls, lp.GetName())
		}
		sort.Strings(ls)
		labels[mf.GetName()] = ls
	}
	want := map[string]string{
		"flywheel_feature_drift_psi":             "feature,model,version",
		"flywheel_prediction_drift_psi":          "model,version",
		"flywheel_drift_window_rows":             "model,version",
		"flywheel_feedback_labels_total":         "model,version",
		"flywheel_feedback_absolute_error_total": "model,version",
		"flywheel_feedback_squared_error_total":  "model,version",
		"flywheel_feedback_correct_total":        "model,version",
		"flywheel_model_error_threshold":         "metric,model,version",
		"flywheel_feedback_store_labels":         "model,version",
		"flywheel_feedback_store_absolute_error": "model,version",
		"flywheel_feedback_store_squared_error":  "model,version",
		"flywheel_predlog_dropped_total":         "",
		"flywheel_predlog_queue_length":          "",
		"flywheel_predlog_written_total":         "",
	}
	for _, name := range monitorMetrics {
		got, ok := labels[name]
		if !ok {
			t.Errorf("%s is not exposed", name)
			continue
		}
		if strings.Join(got, ",") != want[name] {
			t.Errorf("%s has labels %v, want %s", name, got, want[name])
		}
		if !IsMetricFamily(name) {
			t.Errorf("%s is not in IsMetricFamily's list (metrics.go)", name)
		}
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}
