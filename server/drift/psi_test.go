package drift

import (
	"math"
	"slices"
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

func TestBin(t *testing.T) {
	edges := []float64{0, 1, 2, 3}
	dup := []float64{0, 0, 0, 0, 1} // a 0/1 flag that is mostly 0
	tests := []struct {
		edges []float64
		v     float64
		want  int
	}{
		{edges, -5, 0}, {edges, 0, 0}, {edges, 0.5, 0}, {edges, 1, 1}, {edges, 2.9, 2},
		{edges, 3, 2}, {edges, 100, 2}, {edges, math.NaN(), 2}, {edges, math.Inf(1), 2},
		{dup, 0, 3}, {dup, 0.5, 3}, {dup, 1, 3}, {dup, -1, 0},
		{[]float64{5, 5}, 5, 0}, {[]float64{1}, 1, 0},
	}
	for _, tt := range tests {
		if got := Bin(tt.edges, tt.v); got != tt.want {
			t.Errorf("Bin(%v, %g) = %d, want %d", tt.edges, tt.v, got, tt.want)
		}
	}
}

func TestReference(t *testing.T) {
	tests := []struct {
		name      string
		values    []float64
		bins      int
		wantEdges []float64
		wantProps []float64
	}{
		{"quantiles of 0..10", []float64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 5,
			[]float64{0, 2, 4, 6, 8, 10}, []float64{2.0 / 11, 2.0 / 11, 2.0 / 11, 2.0 / 11, 3.0 / 11}},
		{"interpolated", []float64{1, 2, 3, 4, 5}, 2, []float64{1, 3, 5}, []float64{0.4, 0.6}},
		{"few distinct values: one bin each", []float64{0, 0, 0, 0, 0, 0, 1, 1, 1, 1}, 4,
			[]float64{0, 1, 1}, []float64{0.6, 0.4}},
		{"day of week", []float64{0, 1, 2, 3, 4, 5, 6, 0, 1, 2}, 10,
			[]float64{0, 1, 2, 3, 4, 5, 6, 6}, []float64{0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1}},
		{"repeated quantiles merged", []float64{0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5}, 3,
			[]float64{0, 4.0 / 3, 5}, []float64{8.0 / 12, 4.0 / 12}},
		{"NaN ignored", []float64{math.NaN(), 1, 3}, 1, []float64{1, 3}, []float64{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := Reference(tt.values, tt.bins)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Validate(); err != nil {
				t.Fatalf("invalid histogram: %v", err)
			}
			if !slices.EqualFunc(h.Edges, tt.wantEdges, near) || !slices.EqualFunc(h.Proportions, tt.wantProps, near) {
				t.Fatalf("got edges %v props %v, want %v %v", h.Edges, h.Proportions, tt.wantEdges, tt.wantProps)
			}
		})
	}
	if _, err := Reference(nil, 10); err == nil {
		t.Error("Reference of no values: want an error")
	}
	if _, err := Reference([]float64{1}, 0); err == nil {
		t.Error("Reference with 0 bins: want an error")
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }
