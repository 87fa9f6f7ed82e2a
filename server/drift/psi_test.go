package drift

import (
	"math"
	"testing"
)

func TestPSI(t *testing.T) {
	tests := []struct {
		name             string
		expected, actual []float64
		want             float64
	}{
		{"identical", []float64{0.25, 0.25, 0.25, 0.25}, []float64{0.25, 0.25, 0.25, 0.25}, 0},
		{"half shift", []float64{0.5, 0.5}, []float64{0.25, 0.75},
			(0.25-0.5)*math.Log(0.25/0.5) + (0.75-0.5)*math.Log(0.75/0.5)},
		{"deciles vs skewed", deciles(), []float64{0.05, 0.05, 0.05, 0.05, 0.1, 0.1, 0.1, 0.15, 0.15, 0.2},
			4*(0.05-0.1)*math.Log(0.5) + 2*(0.15-0.1)*math.Log(1.5) + (0.2-0.1)*math.Log(2)},
		{"empty actual bin is smoothed", []float64{0.5, 0.5}, []float64{0, 1},
			(1e-4-0.5)*math.Log(1e-4/0.5) + (1-0.5)*math.Log(1/0.5)},
		{"empty bin in both", []float64{0, 0.5, 0.5}, []float64{0, 0.5, 0.5}, 0},
		{"all mass moved", []float64{1, 0}, []float64{0, 1},
			2 * (1 - 1e-4) * math.Log(1/1e-4)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PSI(tt.expected, tt.actual, DefaultEpsilon)
			if math.Abs(got-tt.want) > 1e-12 {
				t.Fatalf("PSI = %.15f, want %.15f", got, tt.want)
			}
			if got < 0 {
				t.Fatalf("PSI is negative: %g", got)
			}
			// PSI is symmetric.
			if back := PSI(tt.actual, tt.expected, DefaultEpsilon); math.Abs(back-got) > 1e-12 {
				t.Fatalf("PSI not symmetric: %g vs %g", got, back)
			}
		})
	}
}

func deciles() []float64 {
	p := make([]float64, 10)
	for i := range p {
		p[i] = 0.1
	}
	return p
}
