package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsLintAndValues(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	m.SetVersionState("m", 1, "READY")
	m.SetVersionState("m", 2, "UNAVAILABLE")
	m.LoadAttempt("m", true)
	m.ObserveInference(Inference{Model: "m", Version: 1, OK: true, Rows: 4, Executions: 1, Request: 0.001})
	m.ObserveHTTP("/v2/models/:model/infer", "POST", 200, 0.001)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	want := `
# HELP flywheel_model_version_ready 1 when the model version serves requests, else 0.
# TYPE flywheel_model_version_ready gauge
flywheel_model_version_ready{model="m",version="1"} 1
flywheel_model_version_ready{model="m",version="2"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "flywheel_model_version_ready"); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(m.Rows.WithLabelValues("m", "1")); got != 4 {
		t.Errorf("rows = %v", got)
	}
	m.DeleteVersion("m", 2)
	if n := testutil.CollectAndCount(m.VersionState); n != 4 {
		t.Errorf("state series after delete = %d, want 4", n)
	}
	var nilM *Metrics
	nilM.ObserveInference(Inference{}) // must not panic
}
