package modelrepo

import (
	"path/filepath"
	"testing"

	"github.com/flywheel-ml/flywheel/internal/configtest"
)

func TestRoundTripAndValidate(t *testing.T) {
	good := Card{
		Name: "m", Version: 1, Task: "regression",
		Inputs:  []Tensor{{Name: "features", DataType: "FP32", Shape: []int64{-1, 2}, Features: []string{"a", "b"}}},
		Outputs: []Tensor{{Name: "prediction", DataType: "FP32", Shape: []int64{-1, 1}}},
		Reference: &Reference{Features: map[string]Histogram{
			"a": {Edges: []float64{0, 1, 2}, Proportions: []float64{0.5, 0.5}},
		}},
	}
	p := filepath.Join(t.TempDir(), CardFile)
	if err := good.Write(p); err != nil {
		t.Fatal(err)
	}
	got, err := LoadCard(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.FeatureNames()[1] != "b" {
		t.Fatalf("features %v", got.FeatureNames())
	}

	// a copy of the loaded card that the cases may change
	loaded := func() Card {
		c := *got
		c.Inputs = append([]Tensor(nil), got.Inputs...)
		c.Reference = &Reference{Features: map[string]Histogram{"a": got.Reference.Features["a"]}}
		return c
	}
	configtest.Check(t, loaded, func(c Card) error { return c.Validate() }, []configtest.Case[Card]{
		{Name: "as loaded", Edit: func(*Card) {}},
		{Name: "no name", Edit: func(c *Card) { c.Name = "" }, Want: "name is empty"},
		{Name: "no inputs", Edit: func(c *Card) { c.Inputs = nil }, Want: "inputs is empty"},
		{Name: "feature count", Edit: func(c *Card) { c.Inputs[0].Features = []string{"a"} }, Want: "do not match shape"},
		{Name: "bad histogram", Edit: func(c *Card) {
			c.Reference.Features["a"] = Histogram{Edges: []float64{0}, Proportions: []float64{1}}
		}, Want: `reference of feature "a": 1 edges for 1 proportions`},
	})
}

func TestHistogramBin(t *testing.T) {
	cases := []struct {
		edges []float64
		v     float64
		want  int
	}{
		{[]float64{0, 1, 2}, -5, 0},
		{[]float64{0, 1, 2}, 0, 0},
		{[]float64{0, 1, 2}, 0.99, 0},
		{[]float64{0, 1, 2}, 1, 1},
		{[]float64{0, 1, 2}, 2, 1},
		{[]float64{0, 1, 2}, 9, 1},
		{[]float64{0, 1, 1}, 0, 0},
		{[]float64{0, 1, 1}, 1, 1},
		{[]float64{3, 3}, 3, 0},
	}
	for _, tc := range cases {
		h := Histogram{Edges: tc.edges, Proportions: make([]float64, len(tc.edges)-1)}
		if got := h.Bin(tc.v); got != tc.want {
			t.Errorf("edges %v: Bin(%v) = %d, want %d", tc.edges, tc.v, got, tc.want)
		}
	}
}
