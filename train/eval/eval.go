// Package eval scores regression predictions (MAE, RMSE, MAPE, R²). The
// reference histograms of a model card are modelrepo.NewHistogram's.
package eval

import (
	"math"
)

// Metrics are the regression scores of a prediction set.
type Metrics struct {
	MAE  float64 `json:"mae"`
	RMSE float64 `json:"rmse"`
	MAPE float64 `json:"mape"` // mean of |error|/|truth| over rows with truth ≠ 0, as a fraction
	R2   float64 `json:"r2"`
	N    int     `json:"n"`
}

// Map returns the metrics keyed by their lower-case names (the card's and
// the tracker's vocabulary).
func (m Metrics) Map() map[string]float64 {
	return map[string]float64{"mae": m.MAE, "rmse": m.RMSE, "mape": m.MAPE, "r2": m.R2}
}

// Regression scores pred against truth (same length, at least one row).
func Regression(truth, pred []float64) Metrics {
	m := Metrics{N: len(truth)}
	if len(truth) == 0 {
		return m
	}
	var mean float64
	for _, y := range truth {
		mean += y
	}
	mean /= float64(len(truth))
	var ae, se, ape, ss float64
	nape := 0
	for i, y := range truth {
		e := pred[i] - y
		ae += math.Abs(e)
		se += e * e
		if y != 0 {
			ape += math.Abs(e) / math.Abs(y)
			nape++
		}
		ss += (y - mean) * (y - mean)
	}
	n := float64(len(truth))
	m.MAE = ae / n
	m.RMSE = math.Sqrt(se / n)
	if nape > 0 {
		m.MAPE = ape / float64(nape)
	}
	if ss > 0 {
		m.R2 = 1 - se/ss
	}
	return m
}
