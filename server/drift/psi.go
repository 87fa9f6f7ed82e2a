// Package drift measures how far the inputs and predictions a model serves
// have moved from its training data: the Population Stability Index (PSI) of
// a sliding window of recent rows against the reference histograms of the
// model card, per feature and for the prediction, exported as Prometheus
// gauges.
package drift

import (
	"fmt"
	"math"
)

// DefaultEpsilon replaces empty bin proportions so PSI stays finite.
const DefaultEpsilon = 1e-4

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
