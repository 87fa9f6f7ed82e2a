// Package eval scores regression predictions (MAE, RMSE, MAPE, R²) and
// builds the reference histograms a model card carries for drift detection.
package eval

import (
	"math"
	"sort"

	"github.com/flywheel-ml/flywheel/train/card"
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

// Bins is the number of quantile bins of a reference histogram.
const Bins = 10

// Histogram summarises values for drift detection. A feature with at most
// Bins distinct values gets one bin per value (edges = the sorted values,
// then the maximum again, so the last bin holds exactly the maximum); any
// other feature gets Bins quantile bins whose duplicate edges are merged.
// Bin i holds values v with Edges[i] ≤ v < Edges[i+1]; the last bin also
// holds v = the last edge; values outside the edges count in the first or last
// bin (card.Histogram.Bin).
func Histogram(values []float64) card.Histogram {
	s := append([]float64(nil), values...)
	sort.Float64s(s)
	var distinct []float64
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			distinct = append(distinct, v)
			if len(distinct) > Bins {
				break
			}
		}
	}
	var edges []float64
	if len(distinct) <= Bins {
		edges = append(distinct, distinct[len(distinct)-1])
	} else {
		edges = []float64{s[0]}
		for q := 1; q < Bins; q++ {
			e := quantile(s, float64(q)/Bins)
			if e > edges[len(edges)-1] {
				edges = append(edges, e)
			}
		}
		// the maximum closes the last bin; if the top quantiles are all the
		// maximum this repeats the edge and the last bin holds exactly it
		edges = append(edges, s[len(s)-1])
	}
	h := card.Histogram{Edges: edges, Proportions: make([]float64, len(edges)-1)}
	for _, v := range s {
		h.Proportions[h.Bin(v)]++
	}
	for i := range h.Proportions {
		h.Proportions[i] /= float64(len(s))
	}
	return h
}

// quantile is the linearly interpolated q-quantile of sorted s (numpy's default).
func quantile(s []float64, q float64) float64 {
	pos := q * float64(len(s)-1)
	i := int(math.Floor(pos))
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (pos-float64(i))*(s[i+1]-s[i])
}
