package pipeline

import (
	"context"
	"fmt"
	"path/filepath"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
)

// ONNXPredictor runs model.onnx with ONNX Runtime: one FP32 input [n, f]
// and one output [n] or [n, 1], named by the card. The runtime must be
// initialised first (server/ort.Setup).
type ONNXPredictor struct{}

var _ Predictor = ONNXPredictor{}

// Predict implements Predictor.
func (ONNXPredictor) Predict(ctx context.Context, modelDir string, c *modelrepo.Card, x [][]float64) ([]float64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(c.Inputs) != 1 || len(c.Outputs) < 1 {
		return nil, fmt.Errorf("model card has %d inputs and %d outputs, want 1 and at least 1", len(c.Inputs), len(c.Outputs))
	}
	if len(x) == 0 {
		return nil, nil
	}
	f := len(x[0])
	data := make([]float32, 0, len(x)*f)
	for i, row := range x {
		if len(row) != f {
			return nil, fmt.Errorf("row %d has %d features, want %d", i, len(row), f)
		}
		for _, v := range row {
			data = append(data, float32(v))
		}
	}
	path := filepath.Join(modelDir, modelrepo.ModelFile)
	sess, err := ortgo.NewDynamicAdvancedSession(path, []string{c.Inputs[0].Name}, []string{c.Outputs[0].Name}, nil)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", path, err)
	}
	defer sess.Destroy()
	in, err := ortgo.NewTensor(ortgo.NewShape(int64(len(x)), int64(f)), data)
	if err != nil {
		return nil, fmt.Errorf("input tensor: %w", err)
	}
	defer in.Destroy()
	outs := []ortgo.Value{nil}
	if err := sess.Run([]ortgo.Value{in}, outs); err != nil {
		return nil, fmt.Errorf("running %s: %w", path, err)
	}
	defer outs[0].Destroy()
	t, ok := outs[0].(*ortgo.Tensor[float32])
	if !ok {
		return nil, fmt.Errorf("output %q is %T, want an FP32 tensor", c.Outputs[0].Name, outs[0])
	}
	got := t.GetData()
	if len(got) != len(x) {
		return nil, fmt.Errorf("output %q has %d values (shape %v) for %d rows", c.Outputs[0].Name, len(got), t.GetShape(), len(x))
	}
	out := make([]float64, len(got))
	for i, v := range got {
		out[i] = float64(v)
	}
	return out, nil
}
