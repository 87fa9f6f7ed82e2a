package modelrepo

import (
	"math"
	"reflect"
	"slices"
	"testing"
)

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

func TestNewHistogram(t *testing.T) {
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
			h, err := NewHistogram(tt.values, tt.bins)
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
	if _, err := NewHistogram(nil, 10); err == nil {
		t.Error("NewHistogram of no values: want an error")
	}
	if _, err := NewHistogram([]float64{1}, 0); err == nil {
		t.Error("NewHistogram with 0 bins: want an error")
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

func TestNewHistogramShapes(t *testing.T) {
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
			h, err := NewHistogram(tc.values, Bins)
			if err != nil {
				t.Fatal(err)
			}
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
	a, _ := NewHistogram([]float64{2, 1}, Bins)
	b, _ := NewHistogram([]float64{1, 2}, Bins)
	if !reflect.DeepEqual(a, b) {
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
