package watch_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/train/dataset"
	"github.com/flywheel-ml/flywheel/train/features"
	"github.com/flywheel-ml/flywheel/train/pipeline"
	"github.com/flywheel-ml/flywheel/train/serving"
	"github.com/flywheel-ml/flywheel/train/serving/servetest"
	"github.com/flywheel-ml/flywheel/train/watch"
)

// repo copies the committed model as versions 1 and 2; version 2's card
// says it was published at published.
func repo(t *testing.T, published time.Time) string {
	t.Helper()
	models := t.TempDir()
	for _, v := range []string{"1", "2"} {
		dir := filepath.Join(models, "ridership", v)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"model.onnx", modelrepo.CardFile} {
			b, err := os.ReadFile(filepath.Join("..", "..", "models", "ridership", "1", f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	p := filepath.Join(models, "ridership", "2", modelrepo.CardFile)
	c, err := modelrepo.LoadCard(p)
	if err != nil {
		t.Fatal(err)
	}
	c.Version, c.CreatedAt = 2, published
	if err := c.Write(p); err != nil {
		t.Fatal(err)
	}
	return models
}

// feedback is what serve exports for version 2 answering 2015-06 … : the
// logged features, the label and what version 2 returned (offset from the
// truth by err(i)).
func feedback(t *testing.T, days int, labelled time.Time, err func(i int) float64) []pipeline.Feedback {
	t.Helper()
	d, e := dataset.Load(filepath.Join("..", "..", "data", "chicago", "chicago.csv"))
	if e != nil {
		t.Fatal(e)
	}
	set := d.FeatureSet(features.WeatherObserved)
	names := set.Names()
	v2 := int64(2)
	var out []pipeline.Feedback
	for _, r := range d.Rows {
		if r.Date.Before(time.Date(2015, 6, 1, 0, 0, 0, 0, time.UTC)) || len(out) == days {
			continue
		}
		x := r.Vector(set)
		m := make(map[string]float64, len(names))
		for j, n := range names {
			m[n] = x[j]
		}
		i := len(out)
		out = append(out, pipeline.Feedback{ID: r.Date.Format(features.DateLayout), Model: "ridership", Version: &v2,
			LabelledAt: labelled.Add(time.Duration(i) * time.Minute), Features: m, Label: r.Target, Prediction: r.Target + err(i)})
	}
	return out
}

func watcher(t *testing.T, models string, fb []pipeline.Feedback, now time.Time, reg prometheus.Registerer) *watch.Watcher {
	t.Helper()
	if _, _, err := ort.Setup(""); err != nil {
		t.Fatal(err)
	}
	s := servetest.New(models, "adm")
	t.Cleanup(s.Close)
	s.AddFeedback(fb...)
	cfg := watch.DefaultConfig()
	cfg.ModelsDir, cfg.Window, cfg.MinRows = models, time.Hour, 14
	w, err := watch.New(watch.Options{Config: cfg, Feedback: &serving.Client{BaseURL: s.URL, Token: "adm"},
		Predictor: pipeline.ONNXPredictor{}, Registerer: reg, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWatchRollsBackAWorseVersion(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	published := now.Add(-30 * time.Minute)
	models := repo(t, published)
	reg := prometheus.NewRegistry()
	// version 2 is deliberately worse: off by 2.5 thousand riders every day
	worse := feedback(t, 28, published.Add(time.Minute), func(int) float64 { return 2.5 })
	w := watcher(t, models, worse[:10], now, reg)
	v, err := w.Check(context.Background())
	if err != nil || v.RolledBack || v.Rows != 10 || !strings.Contains(v.Note, "10 of 14") {
		t.Fatalf("10 labels: %+v %v", v, err)
	}
	reg2 := prometheus.NewRegistry()
	w = watcher(t, models, worse, now, reg2)
	v, err = w.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !v.RolledBack || v.Rows != 28 || v.Decision.DiffLow <= 0 || math.Abs(v.Decision.Candidate-2.5) > 1e-9 || v.Decision.Champion > 1.5 {
		t.Fatalf("verdict %+v decision %+v", v, v.Decision)
	}
	if _, err := os.Stat(filepath.Join(models, "ridership", "2")); !os.IsNotExist(err) {
		t.Fatalf("version 2 still served: %v", err)
	}
	if _, err := os.Stat(filepath.Join(v.RolledBackTo, "model.onnx")); err != nil || !strings.HasPrefix(filepath.Base(v.RolledBackTo), ".rolledback-2-") {
		t.Fatalf("rolled back to %s: %v", v.RolledBackTo, err)
	}
	// the next check has nothing to watch: version 1 is the newest again
	if v, err := w.Check(context.Background()); err != nil || v.Version != 0 || v.RolledBack {
		t.Fatalf("after the rollback: %+v %v", v, err)
	}
	if n := testutil.ToFloat64(mustCounter(t, reg)); n != 0 {
		t.Fatalf("the first watcher counted %v rollbacks", n)
	}
	if n := testutil.ToFloat64(mustCounter(t, reg2)); n != 1 {
		t.Fatalf("flywheel_trainer_rollbacks_total = %v, want 1", n)
	}
}

func TestWatchKeepsAnEqualVersion(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	published := now.Add(-30 * time.Minute)
	models := repo(t, published)
	// version 2 answers like version 1 up to noise of ±0.05
	rows := feedback(t, 28, published.Add(time.Minute), func(i int) float64 { return 0 })
	var x [][]float64
	c, _ := modelrepo.LoadCard(filepath.Join(models, "ridership", "1", modelrepo.CardFile))
	for _, r := range rows {
		row, _ := features.Ordered(r.Features, c.FeatureNames())
		x = append(x, row)
	}
	if _, _, err := ort.Setup(""); err != nil {
		t.Fatal(err)
	}
	pred, err := pipeline.ONNXPredictor{}.Predict(context.Background(), filepath.Join(models, "ridership", "1"), c, x)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		rows[i].Prediction = pred[i] + 0.05*math.Sin(float64(i))
	}
	reg := prometheus.NewRegistry()
	w := watcher(t, models, rows, now, reg)
	v, err := w.Check(context.Background())
	if err != nil || v.RolledBack || v.Decision == nil || v.Decision.DiffLow > 0 {
		t.Fatalf("equal version: %+v %v", v, err)
	}
	if n := testutil.ToFloat64(mustCounter(t, reg)); n != 0 {
		t.Fatalf("%v rollbacks", n)
	}
	// outside the window nothing is judged
	w = watcher(t, models, rows, now.Add(2*time.Hour), prometheus.NewRegistry())
	if v, err := w.Check(context.Background()); err != nil || v.Decision != nil || !strings.Contains(v.Note, "outside") {
		t.Fatalf("outside the window: %+v %v", v, err)
	}
}

func mustCounter(t *testing.T, reg *prometheus.Registry) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "flywheel_trainer_rollbacks_total" {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x"}, func() float64 { return mf.GetMetric()[0].GetCounter().GetValue() })
		}
	}
	t.Fatal("no flywheel_trainer_rollbacks_total")
	return nil
}
