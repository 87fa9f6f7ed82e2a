// Package drift measures how far the inputs and predictions a model serves
// have moved from its training data: the Population Stability Index (PSI) of
// a sliding window of recent rows against the reference histograms of the
// model card, per feature and for the prediction, exported as Prometheus
// gauges.
package drift

import (
	"fmt"
	"math"
	"sort"

	"github.com/flywheel-ml/flywheel/train/card"
)

// DefaultEpsilon replaces empty bin proportions so PSI stays finite.
const DefaultEpsilon = 1e-4

// DefaultBins is the number of quantile bins of a reference histogram.
const DefaultBins = 10

// PSI is the Population Stability Index of actual against expected:
//
//	PSI = Σ (aᵢ − eᵢ) · ln(aᵢ / eᵢ)
//
// over bins of equal edges, where every proportion below eps is replaced by
// eps (epsilon smoothing, so an empty bin does not make PSI infinite).
// Below 0.1 means no drift, 0.1–0.2 moderate, above 0.2 significant.
// Both slices must have the same length; PSI panics otherwise.
func PSI(expected, actual []float64, eps float64) float64 {
	if len(expected) != len(actual) {
		panic(fmt.Sprintf("drift.PSI: %d expected vs %d actual bins", len(expected), len(actual)))
	}
	var psi float64
	for i := range expected {
		e, a := max(expected[i], eps), max(actual[i], eps)
		psi += (a - e) * math.Log(a/e)
	}
	return psi
}

// Bin returns the bin of v in a histogram with the given edges
// (len(edges) = bins+1): the last i with edges[i] ≤ v, clamped to
// [0, bins-1]. So bin i holds edges[i] ≤ v < edges[i+1], the last bin also
// its upper edge and anything above, the first bin anything below edges[0];
// with a repeated last edge ([0, 1, 1]) the last bin holds exactly that
// value. NaN counts in the last bin. This is card.Histogram's rule on the
// train branch, so live rows are binned like the reference.
func Bin(edges []float64, v float64) int {
	bins := len(edges) - 1
	if bins <= 1 {
		return 0
	}
	// Number of inner edges edges[1..bins-1] that are ≤ v.
	inner := edges[1:bins]
	return sort.Search(len(inner), func(i int) bool { return inner[i] > v })
}

// Reference builds the reference histogram of values the way the trainer
// does for model cards (train/eval.Histogram): a feature with at most bins
// distinct values gets one bin per value (edges are the sorted values, then
// the maximum again); any other feature gets bins quantile bins (linear
// interpolation between closest ranks, numpy's default) whose duplicate
// edges are merged. NaN values are ignored.
func Reference(values []float64, bins int) (card.Histogram, error) {
	if bins < 1 {
		return card.Histogram{}, fmt.Errorf("bins must be positive, got %d", bins)
	}
	var xs []float64
	for _, v := range values {
		if !math.IsNaN(v) {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return card.Histogram{}, fmt.Errorf("no values to build a reference from")
	}
	sort.Float64s(xs)
	var distinct []float64
	for i, v := range xs {
		if i == 0 || v != xs[i-1] {
			distinct = append(distinct, v)
			if len(distinct) > bins {
				break
			}
		}
	}
	var edges []float64
	if len(distinct) <= bins {
		edges = append(distinct, distinct[len(distinct)-1])
	} else {
		edges = []float64{xs[0]}
		for j := 1; j < bins; j++ {
			if e := quantile(xs, float64(j)/float64(bins)); e > edges[len(edges)-1] {
				edges = append(edges, e)
			}
		}
		edges = append(edges, xs[len(xs)-1])
	}
	return card.Histogram{Edges: edges, Proportions: Proportions(edges, xs)}, nil
}

// Proportions returns the share of values in each bin of edges.
func Proportions(edges []float64, values []float64) []float64 {
	bins := len(edges) - 1
	if bins < 1 {
		return nil
	}
	p := make([]float64, bins)
	if len(values) == 0 {
		return p
	}
	for _, v := range values {
		p[Bin(edges, v)]++
	}
	for i := range p {
		p[i] /= float64(len(values))
	}
	return p
}

// quantile of sorted xs at q in [0, 1], linear interpolation (type 7).
func quantile(xs []float64, q float64) float64 {
	h := q * float64(len(xs)-1)
	lo := int(math.Floor(h))
	if lo >= len(xs)-1 {
		return xs[len(xs)-1]
	}
	return xs[lo] + (h-float64(lo))*(xs[lo+1]-xs[lo])
}
