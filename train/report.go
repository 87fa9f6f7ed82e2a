package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"github.com/flywheel-ml/flywheel/train/eval"
	"github.com/flywheel-ml/flywheel/train/features"
)

// RatioModel is a model fitted to target ÷ feature Column: its prediction is
// the inner model's output times that feature.
type RatioModel struct {
	Model  Predictor
	Column int
}

// Predict implements Predictor.
func (r RatioModel) Predict(x []float64) float64 { return r.Model.Predict(x) * x[r.Column] }

// The naive baselines every model is reported beside.
const (
	// SeasonalNaive forecasts the same weekday 364 days earlier (features.Lag364Name).
	SeasonalNaive = "seasonal_naive"
	// Lag14 forecasts the station's own entries 14 days earlier (features.Lag14Column).
	Lag14 = "lag14"
)

// Baselines scores the naive forecasts on rows, for the baselines whose
// input is among names: baseline → mae, rmse, mape, r2, bias.
func Baselines(names []string, rows []Example) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for _, b := range []struct{ name, feature string }{{SeasonalNaive, features.Lag364Name}, {Lag14, features.Lag14Column}} {
		j := features.Index(names, b.feature)
		if j < 0 || len(rows) == 0 {
			continue
		}
		pred := make([]float64, len(rows))
		for i, e := range rows {
			pred[i] = e.Features[j]
		}
		m := eval.Regression(targets(rows), pred).Map()
		m["bias"] = bias(rows, pred)
		out[b.name] = m
	}
	return out
}

func bias(rows []Example, pred []float64) float64 {
	var s float64
	for i, e := range rows {
		s += pred[i] - e.Target
	}
	return s / float64(len(rows))
}

// weekdays are the report's day names, Monday first (features.DayOfWeek).
var weekdays = [7]string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}

// Report returns what a data scientist asks of a forecast besides its MAE:
// bias (mean of prediction − truth; negative under-forecasts), the MAE of
// each weekday (mae_mon … mae_sun), of holidays and the Christmas–New Year
// days (holiday_mae, holiday_rows).
func Report(rows []Example, pred []float64) map[string]float64 {
	out := map[string]float64{}
	if len(rows) == 0 {
		return out
	}
	out["bias"] = bias(rows, pred)
	var sum [7]float64
	var n [7]int
	var hol float64
	nh := 0
	for i, e := range rows {
		ae := math.Abs(pred[i] - e.Target)
		d := features.DayOfWeek(e.Date)
		sum[d] += ae
		n[d]++
		if features.HolidayKind(e.Date) != features.NoHoliday || features.ChristmasDay(e.Date) > 0 {
			hol += ae
			nh++
		}
	}
	for d, name := range weekdays {
		if n[d] > 0 {
			out["mae_"+name] = sum[d] / float64(n[d])
		}
	}
	if nh > 0 {
		out["holiday_mae"] = hol / float64(nh)
		out["holiday_rows"] = float64(nh)
	}
	return out
}

// Importance is permutation feature importance: for each feature, the rise
// in MAE on rows when that column is shuffled (seeded), the others kept.
func Importance(p Predictor, names []string, rows []Example, seed int64) map[string]float64 {
	out := make(map[string]float64, len(names))
	if len(rows) < 2 {
		return out
	}
	truth := targets(rows)
	base := eval.Regression(truth, predictAll(p, rows)).MAE
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5851f42d4c957f2d))
	x := make([]float64, len(names))
	pred := make([]float64, len(rows))
	for j, name := range names {
		perm := rng.Perm(len(rows))
		for i, e := range rows {
			copy(x, e.Features)
			x[j] = rows[perm[i]].Features[j]
			pred[i] = p.Predict(x)
		}
		out[name] = eval.Regression(truth, pred).MAE - base
	}
	return out
}

// TopImportance returns the k most important features, highest first, as
// "name +0.123" strings.
func TopImportance(imp map[string]float64, k int) []string {
	names := make([]string, 0, len(imp))
	for n := range imp {
		names = append(names, n)
	}
	sort.Slice(names, func(a, b int) bool {
		if imp[names[a]] != imp[names[b]] {
			return imp[names[a]] > imp[names[b]]
		}
		return names[a] < names[b]
	})
	if len(names) > k {
		names = names[:k]
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = fmt.Sprintf("%s %+.3f", n, imp[n])
	}
	return out
}
