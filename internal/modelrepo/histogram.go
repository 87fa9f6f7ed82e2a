package modelrepo

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
)

// Bins is the number of bins of a reference histogram.
const Bins = 10

// Histogram is a binned distribution: len(Edges) == len(Proportions)+1 and
// the proportions sum to 1. Bin i holds Edges[i] ≤ v < Edges[i+1]; values
// below Edges[0] count in the first bin, values from the last edge up in the
// last bin (see Bin).
type Histogram struct {
	Edges       []float64 `json:"edges"`
	Proportions []float64 `json:"proportions"`
}

// Validate checks a histogram's shape.
func (h Histogram) Validate() error {
	if len(h.Proportions) == 0 || len(h.Edges) != len(h.Proportions)+1 {
		return fmt.Errorf("%d edges for %d proportions (want proportions+1)", len(h.Edges), len(h.Proportions))
	}
	for i := 1; i < len(h.Edges); i++ {
		if h.Edges[i] < h.Edges[i-1] {
			return fmt.Errorf("edges not sorted at %d", i)
		}
	}
	return nil
}

// Bin returns the bin of v in the histogram (see the function Bin).
func (h Histogram) Bin(v float64) int { return Bin(h.Edges, v) }

// Bin returns the bin of v in a histogram with the given edges
// (len(edges) = bins+1): the last i with edges[i] ≤ v, clamped to
// [0, bins-1]. So bin i holds edges[i] ≤ v < edges[i+1], the last bin also
// its upper edge and anything above, the first bin anything below edges[0];
// with a repeated last edge ([0, 1, 1]) the last bin holds exactly that
// value. NaN counts in the last bin. Drift bins live rows with it, so they
// fall where the reference's training rows fell.
func Bin(edges []float64, v float64) int {
	bins := len(edges) - 1
	if bins <= 1 {
		return 0
	}
	// Number of inner edges edges[1..bins-1] that are ≤ v.
	inner := edges[1:bins]
	return sort.Search(len(inner), func(i int) bool { return inner[i] > v })
}

// NewHistogram is the reference histogram of values, the one binning rule
// of model cards (the trainer, the retraining pipeline and drift use it): a
// feature with at most bins distinct values gets one bin per value (edges
// are the sorted values, then the maximum again, so the last bin holds
// exactly the maximum); any other feature gets bins quantile bins (linear
// interpolation between closest ranks, numpy's default) whose duplicate
// edges are merged. NaN values are ignored.
func NewHistogram(values []float64, bins int) (Histogram, error) {
	if bins < 1 {
		return Histogram{}, fmt.Errorf("bins must be positive, got %d", bins)
	}
	xs := make([]float64, 0, len(values))
	for _, v := range values {
		if !math.IsNaN(v) {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return Histogram{}, errors.New("no values to build a reference histogram from")
	}
	slices.Sort(xs)
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
		// the maximum closes the last bin; if the top quantiles are all the
		// maximum this repeats the edge and the last bin holds exactly it
		edges = append(edges, xs[len(xs)-1])
	}
	return Histogram{Edges: edges, Proportions: Proportions(edges, xs)}, nil
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

// NewReference is the drift reference of a model's training rows: the
// histogram (NewHistogram, Bins bins) of each column j of x, named
// names[j], and of the model's predictions pred on those rows.
func NewReference(names []string, x [][]float64, pred []float64) (*Reference, error) {
	ref := &Reference{Features: make(map[string]Histogram, len(names))}
	col := make([]float64, len(x))
	for j, name := range names {
		for i, row := range x {
			col[i] = row[j]
		}
		h, err := NewHistogram(col, Bins)
		if err != nil {
			return nil, fmt.Errorf("reference of feature %q: %w", name, err)
		}
		ref.Features[name] = h
	}
	h, err := NewHistogram(pred, Bins)
	if err != nil {
		return nil, fmt.Errorf("reference of the prediction: %w", err)
	}
	ref.Prediction = &h
	return ref, nil
}
