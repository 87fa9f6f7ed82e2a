package train

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/train/features"
)

// TestBacktest: folds are the newest periods of the training rows, oldest
// first, each fitted on the days before it; the test rows are never read;
// GBDT's tree count comes from the folds and Tune applies it.
func TestBacktest(t *testing.T) {
	d, err := LoadData(chicagoCSV, "", Range{From: mustDate("2007-01-01"), Until: mustDate("2011-12-31")}, testRange)
	if err != nil {
		t.Fatal(err)
	}
	poisoned := *d
	poisoned.Test = []Example{{Date: mustDate("2012-01-01"), Features: make([]float64, features.Count), Target: math.NaN()}}
	cfg := testConfig(GBDT, &poisoned)
	cfg.Params.GBDT.Iterations = 150
	bt, err := RunBacktest(context.Background(), cfg, Backtest{Folds: 2, FoldDays: 364, Level: 0.9})
	if err != nil {
		t.Fatal(err)
	}
	if len(bt.Folds) != 2 {
		t.Fatalf("%d folds", len(bt.Folds))
	}
	last, first := bt.Folds[1], bt.Folds[0]
	if last.Until != mustDate("2011-12-31") || last.From != mustDate("2011-01-02") ||
		first.Until != mustDate("2011-01-01") || first.TrainRows >= last.TrainRows {
		t.Fatalf("folds %+v", bt.Folds)
	}
	if bt.Iterations < 1 || bt.Iterations > 150 {
		t.Fatalf("chosen trees %d of 150", bt.Iterations)
	}
	for _, f := range bt.Folds {
		if !(f.MAE > 0 && f.MAE < f.Baselines[SeasonalNaive]) {
			t.Errorf("fold %s: MAE %.3f does not beat the seasonal naive %.3f", f.Until.Format(time.DateOnly), f.MAE, f.Baselines[SeasonalNaive])
		}
	}
	if bt.HalfWidth <= 0 || bt.MAESD <= 0 || bt.Metrics()["iterations"] != float64(bt.Iterations) {
		t.Fatalf("result %+v", bt)
	}
	tuned := bt.Tune(cfg)
	if tuned.Params.GBDT.EarlyStopping || tuned.Params.GBDT.Iterations != bt.Iterations {
		t.Fatalf("tuned %+v", tuned.Params.GBDT)
	}
	if _, err := RunBacktest(context.Background(), cfg, Backtest{Folds: 30, FoldDays: 364}); err == nil {
		t.Fatal("30 one-year folds of 5 years accepted")
	}
}

func TestConformal(t *testing.T) {
	errs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	// ⌈11 × 0.9⌉ = 10th smallest
	if q := ConformalQuantile(errs, 0.9); q != 10 {
		t.Fatalf("q = %v", q)
	}
	if q := ConformalQuantile(errs, 0.5); q != 6 {
		t.Fatalf("median q = %v", q)
	}
	rows := []Example{{Target: 0}, {Target: 1}, {Target: 5}}
	if c := Coverage(rows, []float64{0, 0, 0}, 1); math.Abs(c-2.0/3) > 1e-12 {
		t.Fatalf("coverage %v", c)
	}
}

// firstFeature predicts feature 0.
type firstFeature struct{}

func (firstFeature) Predict(x []float64) float64 { return x[0] }

func TestReportAndImportance(t *testing.T) {
	var rows []Example
	day := mustDate("2012-12-17") // a Monday
	for i := 0; i < 28; i++ {
		d := day.AddDate(0, 0, i)
		rows = append(rows, Example{Date: d, Features: []float64{float64(i), 7}, Target: float64(i)})
	}
	pred := make([]float64, len(rows))
	for i, e := range rows {
		pred[i] = e.Target + 1
		if features.ChristmasDay(e.Date) > 0 {
			pred[i] = e.Target - 2
		}
	}
	r := Report(rows, pred)
	// Dec 24 … Jan 1: 9 days at −2, 19 days at +1
	if r["holiday_rows"] != 9 || r["holiday_mae"] != 2 || math.Abs(r["bias"]-(19.0-18)/28) > 1e-12 {
		t.Fatalf("report %v", r)
	}
	if r["mae_mon"] == 0 || r["mae_sun"] == 0 || len(r) != 10 {
		t.Fatalf("weekdays %v", r)
	}
	imp := Importance(firstFeature{}, []string{"a", "b"}, rows, 1)
	if !(imp["a"] > 1) || imp["b"] != 0 {
		t.Fatalf("importance %v", imp)
	}
	if top := TopImportance(imp, 1); len(top) != 1 || top[0][:2] != "a " {
		t.Fatalf("top %v", top)
	}
	b := Baselines([]string{features.Lag364Name, "x"}, []Example{{Features: []float64{3, 0}, Target: 1}})
	if b[SeasonalNaive]["mae"] != 2 || b[SeasonalNaive]["bias"] != 2 || b[Lag14] != nil {
		t.Fatalf("baselines %v", b)
	}
}
