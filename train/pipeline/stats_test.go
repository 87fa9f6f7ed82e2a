package pipeline

import (
	"testing"

	"github.com/flywheel-ml/flywheel/server/drift"
	"github.com/flywheel-ml/flywheel/train/eval"
)

// The reference the pipeline writes for a retrained model must show drift
// the way the trainer's does: a 0/1 feature with 90 % zeros in training and
// 50 % in live traffic has a PSI above the significant-drift line.
func TestReferenceShowsDrift(t *testing.T) {
	const n = 1000
	x := make([][]float64, n)
	pred := make([]float64, n)
	for i := range x {
		flag := 0.0
		if i%10 == 0 {
			flag = 1
		}
		x[i] = []float64{flag, float64(i)}
		pred[i] = float64(i) / 2
	}
	ref := reference([]string{"holiday", "hour"}, x, pred)

	live := make([]float64, 200)
	for i := range live {
		live[i] = float64(i % 2)
	}
	h := ref.Features["holiday"]
	psi := drift.PSI(h.Proportions, drift.Proportions(h.Edges, live), drift.DefaultEpsilon)
	if psi < 0.2 {
		t.Fatalf("holiday 10%% → 50%% ones: PSI %.3f over reference %+v, want > 0.2", psi, h)
	}
	// One binning rule: the trainer's.
	col := make([]float64, n)
	for j, name := range []string{"holiday", "hour"} {
		for i := range x {
			col[i] = x[i][j]
		}
		if got, want := ref.Features[name], eval.Histogram(col); !equalHist(got.Edges, want.Edges) || !equalHist(got.Proportions, want.Proportions) {
			t.Errorf("%s: reference %+v, trainer's %+v", name, got, want)
		}
	}
	if got, want := *ref.Prediction, eval.Histogram(pred); !equalHist(got.Edges, want.Edges) {
		t.Errorf("prediction: reference %+v, trainer's %+v", got, want)
	}
}

func equalHist(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
