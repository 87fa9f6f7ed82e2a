package eval

import (
	"math"
	"reflect"
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

func TestHistogram(t *testing.T) {
	seq := make([]float64, 100)
	for i := range seq {
		seq[i] = float64(i)
	}
	binary := make([]float64, 100)
	for i := 0; i < 5; i++ {
		binary[i] = 1
	}
	skewed := make([]float64, 100) // 85% zeros, then 15 distinct values
	for i := 85; i < 100; i++ {
		skewed[i] = float64(i)
	}
	cases := []struct {
		name   string
		values []float64
		edges  []float64
		props  []float64
	}{
		{"continuous", seq, []float64{0, 9.9, 19.8, 29.7, 39.6, 49.5, 59.4, 69.3, 79.2, 89.1, 99},
			[]float64{.1, .1, .1, .1, .1, .1, .1, .1, .1, .1}},
		{"binary", binary, []float64{0, 1, 1}, []float64{.95, .05}},
		{"constant", []float64{3, 3, 3}, []float64{3, 3}, []float64{1}},
		{"skewed: equal quantiles merge", skewed, []float64{0, 89.1, 99}, []float64{.9, .1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := Histogram(tc.values)
			if err := h.Validate(); err != nil {
				t.Fatal(err)
			}
			if !approx(h.Edges, tc.edges) {
				t.Fatalf("edges %v, want %v", h.Edges, tc.edges)
			}
			if tc.props != nil && !approx(h.Proportions, tc.props) {
				t.Fatalf("proportions %v, want %v", h.Proportions, tc.props)
			}
			var sum float64
			for _, p := range h.Proportions {
				sum += p
			}
			if math.Abs(sum-1) > 1e-12 {
				t.Fatalf("proportions sum to %v", sum)
			}
		})
	}
	if !reflect.DeepEqual(Histogram([]float64{2, 1}), Histogram([]float64{1, 2})) {
		t.Fatal("order matters")
	}
}

func approx(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-9 {
			return false
		}
	}
	return true
}
