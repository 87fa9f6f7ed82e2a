package batch

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/flywheel-ml/flywheel/internal/benchmodels"
	"github.com/flywheel-ml/flywheel/server/ort"
)

// ortRunner runs a float32 model through onnxruntime_go, the way a serving
// session does: inputs wrap the request's slices (no copy), outputs are
// allocated by ORT and copied out before the OrtValues are released.
type ortRunner struct {
	sess    *ortgo.DynamicAdvancedSession
	inputs  []string
	outputs []string
}

var (
	modelDirOnce sync.Once
	modelDir     string
	modelDirErr  error
)

// TestMain removes the bench models' folder that benchModel wrote.
func TestMain(m *testing.M) {
	code := m.Run()
	if modelDir != "" {
		os.RemoveAll(modelDir)
	}
	os.Exit(code)
}

// benchModel writes the bench models once per test binary and opens a
// session on one of them with 1 intra-op and 1 inter-op thread.
func benchModel(t testing.TB, name string) (*ortRunner, benchmodels.Spec) {
	t.Helper()
	if _, _, err := ort.Setup(""); err != nil {
		t.Fatal(err)
	}
	modelDirOnce.Do(func() {
		modelDir, modelDirErr = os.MkdirTemp("", "flywheel-batch-models-")
		if modelDirErr == nil {
			_, modelDirErr = benchmodels.Write(modelDir)
		}
	})
	if modelDirErr != nil {
		t.Fatal(modelDirErr)
	}
	spec, err := benchmodels.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := ortgo.NewSessionOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer opts.Destroy()
	if err := opts.SetIntraOpNumThreads(1); err != nil {
		t.Fatal(err)
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		t.Fatal(err)
	}
	r := &ortRunner{inputs: []string{spec.Input}, outputs: []string{spec.Output}}
	r.sess, err = ortgo.NewDynamicAdvancedSession(filepath.Join(modelDir, name+".onnx"), r.inputs, r.outputs, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.sess.Destroy() })
	return r, spec
}

func (r *ortRunner) Run(_ context.Context, in []Tensor) ([]Tensor, error) {
	if len(in) != len(r.inputs) {
		return nil, fmt.Errorf("want %d inputs, got %d", len(r.inputs), len(in))
	}
	vals := make([]ortgo.Value, len(in))
	defer func() {
		for _, v := range vals {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i, t := range in {
		d, ok := t.Data.([]float32)
		if !ok || t.Name != r.inputs[i] {
			return nil, fmt.Errorf("input %d: want FP32 %q, got %s %q", i, r.inputs[i], t.DataType, t.Name)
		}
		v, err := ortgo.NewTensor(ortgo.Shape(t.Shape), d)
		if err != nil {
			return nil, err
		}
		vals[i] = v
	}
	outs := make([]ortgo.Value, len(r.outputs))
	if err := r.sess.Run(vals, outs); err != nil {
		return nil, err
	}
	res := make([]Tensor, len(outs))
	for i, o := range outs {
		ot := o.(*ortgo.Tensor[float32])
		res[i] = Tensor{Name: r.outputs[i], DataType: "FP32", Shape: ot.GetShape().Clone(), Data: append([]float32(nil), ot.GetData()...)}
		o.Destroy()
	}
	return res, nil
}
