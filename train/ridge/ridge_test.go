package ridge

import (
	"context"
	"math"
	"testing"
)

func TestRecoversLinearModel(t *testing.T) {
	// y = 5 + 2·x0 − 3·x1 + [1, 0, −1] by category (column 2)
	var X [][]float64
	var y []float64
	for i := 0; i < 300; i++ {
		x0, x1, c := float64(i%17)/4, float64(i%11)/3, float64(i%3)
		X = append(X, []float64{x0, x1, c})
		y = append(y, 5+2*x0-3*x1+[]float64{1, 0, -1}[i%3])
	}
	m, err := Fit(context.Background(), Config{Alpha: 1e-9}, X, y, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range X {
		if d := math.Abs(m.Predict(x) - y[i]); d > 1e-6 {
			t.Fatalf("row %d off by %g", i, d)
		}
	}
	// A strong penalty shrinks the coefficients towards zero (prediction towards the mean).
	big, _ := Fit(context.Background(), Config{Alpha: 1e6}, X, y, 2, 3)
	for _, c := range big.Coef {
		if math.Abs(c) > 0.01 {
			t.Fatalf("coefficient %g not shrunk", c)
		}
	}
	if err := (Config{Alpha: -1}).Validate(); err == nil {
		t.Fatal("negative alpha accepted")
	}
}
