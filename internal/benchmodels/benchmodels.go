// Package benchmodels writes the two benchmark ONNX models of the project's
// benchmark harness byte for byte: mlp_small (input[N,16] → probabilities[N,3])
// and mlp_wide (input[N,256] → probabilities[N,10]).
//
// The bytes come from server/testmodel's generator (a copy of the bench
// harness's models/gen: same field numbers, same splitmix64 weights), so tests
// and `make bench` need nothing outside this repository; the digests below
// check it against the harness's SHA256SUMS.
//
//	mlp_small  input[N,16]  -> Gemm 64   -> Relu -> Gemm 64   -> Relu -> Gemm 3  -> Softmax -> probabilities[N,3]
//	mlp_wide   input[N,256] -> Gemm 1024 -> Relu -> Gemm 1024 -> Relu -> Gemm 10 -> Softmax -> probabilities[N,10]
package benchmodels

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/testmodel"
)

// Spec describes one benchmark model.
type Spec struct {
	Name     string // file base name, also the served model name
	Sizes    []int  // layer widths: input features, hidden..., classes
	Seed     uint64
	SHA256   string // digest of the model bytes (the bench harness's SHA256SUMS)
	Input    string
	Output   string
	Features int
	Classes  int
}

// Specs are the two models, in the harness's order.
var Specs = []Spec{
	{Name: "mlp_small", Sizes: []int{16, 64, 64, 3}, Seed: 1, Input: "input", Output: "probabilities", Features: 16, Classes: 3,
		SHA256: "4a29315c7dff864072f16a2f21ae6fe99ffe83fc36f329b7da9890a82a081b44"},
	{Name: "mlp_wide", Sizes: []int{256, 1024, 1024, 10}, Seed: 2, Input: "input", Output: "probabilities", Features: 256, Classes: 10,
		SHA256: "79f44bf01048d5d162199f7c699e0f0d60682928831811999029b415be58b6d8"},
}

// Lookup returns the spec named name.
func Lookup(name string) (Spec, error) {
	for _, s := range Specs {
		if s.Name == name {
			return s, nil
		}
	}
	return Spec{}, fmt.Errorf("benchmodels: unknown model %q", name)
}

// Bytes returns the ONNX model bytes for s.
func (s Spec) Bytes() []byte { return testmodel.MLP(s.Name, s.Sizes, s.Seed) }

// ReferenceRow returns the harness's reference input row: x[i] = (i%7)/7 - 0.5.
func (s Spec) ReferenceRow() []float32 { return testmodel.ReferenceRow(s.Features) }

// Write writes <dir>/<name>.onnx for every spec and returns the paths.
func Write(dir string) (map[string]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	paths := map[string]string{}
	for _, s := range Specs {
		p := filepath.Join(dir, s.Name+".onnx")
		if err := os.WriteFile(p, s.Bytes(), 0o644); err != nil {
			return nil, fmt.Errorf("benchmodels: %w", err)
		}
		paths[s.Name] = p
	}
	return paths, nil
}

// Card returns a model card for s (features f00, f01, …) whose reference
// distribution is ten equal bins over [-1, 1] for every feature and over
// [0, 1] for the prediction (the first output column), so that a server
// with drift monitoring on does the full per-request drift work for the
// benchmark models.
func (s Spec) Card() *modelrepo.Card {
	names := make([]string, s.Features)
	feats := make(map[string]modelrepo.Histogram, s.Features)
	for i := range names {
		names[i] = fmt.Sprintf("f%02d", i)
		feats[names[i]] = uniform(-1, 1, 10)
	}
	pred := uniform(0, 1, 10)
	return &modelrepo.Card{
		Name: s.Name, Version: 1, Task: "classification",
		Inputs:    []modelrepo.Tensor{{Name: s.Input, DataType: "FP32", Shape: []int64{-1, int64(s.Features)}, Features: names}},
		Outputs:   []modelrepo.Tensor{{Name: s.Output, DataType: "FP32", Shape: []int64{-1, int64(s.Classes)}}},
		Training:  modelrepo.Training{Algorithm: "benchmark"},
		Reference: &modelrepo.Reference{Features: feats, Prediction: &pred},
	}
}

func uniform(lo, hi float64, bins int) modelrepo.Histogram {
	h := modelrepo.Histogram{Edges: make([]float64, bins+1), Proportions: make([]float64, bins)}
	for i := range h.Edges {
		h.Edges[i] = lo + (hi-lo)*float64(i)/float64(bins)
	}
	for i := range h.Proportions {
		h.Proportions[i] = 1 / float64(bins)
	}
	return h
}
