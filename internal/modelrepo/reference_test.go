package modelrepo_test

import (
	"testing"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/drift"
)

// The reference a card carries must show drift: a 0/1 feature with 90 %
// zeros in training and 50 % in live traffic has a PSI above the
// significant-drift line. (The pipeline's own binning gave such a feature
// one bin, so its PSI was always 0.)
func TestNewReferenceShowsDrift(t *testing.T) {
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
	ref, err := modelrepo.NewReference([]string{"holiday", "hour"}, x, pred)
	if err != nil {
		t.Fatal(err)
	}
	live := make([]float64, 200)
	for i := range live {
		live[i] = float64(i % 2)
	}
	h := ref.Features["holiday"]
	psi := drift.PSI(h.Proportions, modelrepo.Proportions(h.Edges, live), drift.DefaultEpsilon)
	if psi < 0.2 {
		t.Fatalf("holiday 10%% → 50%% ones: PSI %.3f over reference %+v, want > 0.2", psi, h)
	}
	if hr := ref.Features["hour"]; len(hr.Proportions) != modelrepo.Bins {
		t.Errorf("hour: %d bins, want %d", len(hr.Proportions), modelrepo.Bins)
	}
	if ref.Prediction == nil || len(ref.Prediction.Proportions) != modelrepo.Bins {
		t.Errorf("prediction reference %+v", ref.Prediction)
	}
	if _, err := modelrepo.NewReference([]string{"a"}, nil, nil); err == nil {
		t.Error("reference of no rows: want an error")
	}
}
