package eval

import (
	"math"
	"testing"
)

func TestRegression(t *testing.T) {
	m := Regression([]float64{1, 2, 3, 4}, []float64{2, 2, 3, 2})
	want := Metrics{MAE: 0.75, RMSE: math.Sqrt(5.0 / 4), MAPE: (1 + 0.5) / 4, R2: 1 - 5/5.0, N: 4}
	if math.Abs(m.MAE-want.MAE) > 1e-12 || math.Abs(m.RMSE-want.RMSE) > 1e-12 || math.Abs(m.MAPE-want.MAPE) > 1e-12 || math.Abs(m.R2-want.R2) > 1e-12 {
		t.Fatalf("got %+v want %+v", m, want)
	}
	if p := Regression([]float64{1, 2}, []float64{1, 2}); p.R2 != 1 || p.MAE != 0 {
		t.Fatalf("perfect %+v", p)
	}
	if got := m.Map(); len(got) != 4 || got["mae"] != m.MAE {
		t.Fatalf("map %v", got)
	}
}
