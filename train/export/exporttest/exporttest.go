// Package exporttest runs exported models through the server's ONNX Runtime
// session (server/ort), for tests that hold an export to the Go model it
// came from: what they compare is what serve would compute.
package exporttest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/server/tensor"
)

// Predict loads model (ONNX bytes) as serve does and runs the rows X through
// it in one FP32 batch; it returns the first output's values. It sets ONNX
// Runtime up when needed and fails t on any error.
func Predict(t testing.TB, model []byte, X [][]float64) []float32 {
	t.Helper()
	if _, _, err := ort.Setup(""); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), modelrepo.ModelFile)
	if err := os.WriteFile(path, model, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSession(path, ort.DefaultSessionOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	flat := make([]float32, 0, len(X)*len(X[0]))
	for _, x := range X {
		for _, v := range x {
			flat = append(flat, float32(v))
		}
	}
	in := tensor.Tensor{Name: s.Inputs()[0].Name, DataType: tensor.FP32, Shape: []int64{int64(len(X)), int64(len(X[0]))}, Data: flat}
	out, err := s.Run(context.Background(), []tensor.Tensor{in})
	if err != nil {
		t.Fatal(err)
	}
	y, ok := out[0].Data.([]float32)
	if !ok {
		t.Fatalf("output %q is %s, want FP32", s.Outputs()[0].Name, out[0].DataType)
	}
	return y
}
