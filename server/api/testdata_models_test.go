package api_test

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/flywheel-ml/flywheel/server/tensor"
)

// ortTestData is onnxruntime_go's own test_data folder in the module cache.
func ortTestData(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/yalue/onnxruntime_go").Output()
	if err != nil {
		t.Fatalf("locating onnxruntime_go: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "test_data")
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

type tdInput struct {
	name  string
	dt    tensor.DataType
	shape []int64
	data  any // typed slice as in tensor.Tensor
}

// tdModels lists every .onnx file in test_data with the inputs it is served.
var tdModels = []struct {
	file    string
	model   string
	inputs  []tdInput
	noInfer string // why the model is only loaded and described
}{
	{file: "example ż 大 김.onnx", model: "odd_name", inputs: []tdInput{{"in", tensor.Int32, []int64{1, 2}, []int32{3, -4}}}},
	{file: "example_0_dim_output.onnx", model: "zero_dim_output", inputs: []tdInput{{"x", tensor.FP32, []int64{2, 8}, make([]float32, 16)}}},
	{file: "example_big_fanout.onnx", model: "big_fanout", inputs: []tdInput{{"input", tensor.FP32, []int64{1, 4}, []float32{0.25, -1, 2, 0.5}}}},
	{file: "example_dynamic_axes.onnx", model: "dynamic_axes", inputs: []tdInput{{"input_vectors", tensor.FP32, []int64{3, 10}, seqF32(30)}}},
	{file: "example_float16.onnx", model: "float16", inputs: []tdInput{{"InputA", tensor.FP16, []int64{1, 2, 2, 2}, []float32{0, 0.25, 0.5, 1, 1.5, -2, 3.75, 0.125}}}},
	{file: "example_multitype.onnx", model: "multitype", inputs: []tdInput{
		{"InputA", tensor.Uint8, []int64{1, 1, 1}, []uint8{200}},
		{"InputB", tensor.FP64, []int64{1, 2, 2}, []float64{0.1, 0.5, -0.25, 1}}}},
	{file: "example_several_inputs_and_outputs.onnx", model: "several_inputs_outputs", inputs: []tdInput{
		{"input 1", tensor.Int32, []int64{2, 5, 2, 5}, seqI32(100)},
		{"input 2", tensor.FP32, []int64{2, 3, 20}, seqF32(120)},
		{"input 3", tensor.BF16, []int64{9}, []float32{7, 1, 2, 3, 4, 5, 6, 7, 8}}}},
	{file: "example_strings.onnx", model: "strings", inputs: []tdInput{{"input", tensor.Bytes, []int64{3}, []string{"I", "eAt", "POTATOEs!!"}}}},
	{file: "sklearn_randomforest.onnx", model: "sklearn_randomforest", inputs: []tdInput{{"X", tensor.FP32, []int64{3, 4},
		[]float32{5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3, 5.9, 2.8, 4.3, 1.3}}}},
	{file: "example_big_compute.onnx", model: "big_compute", noInfer: "its 52,428,800-element input is ~100 MB of JSON, over the 8 MiB body limit"},
}

func seqF32(n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(i%11)/4 - 1
	}
	return out
}

func seqI32(n int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(i%9) - 3
	}
	return out
}

// TestServesOnnxRuntimeGoTestData serves every model of onnxruntime_go's
// test_data over HTTP and checks each answer equals a direct ONNX Runtime
// call on the same input.
func TestServesOnnxRuntimeGoTestData(t *testing.T) {
	td := ortTestData(t)
	files, _ := filepath.Glob(filepath.Join(td, "*.onnx"))
	if len(files) != len(tdModels) {
		t.Fatalf("test_data has %d models, the table lists %d: update the table", len(files), len(tdModels))
	}
	root := t.TempDir()
	for _, m := range tdModels {
		b, err := os.ReadFile(filepath.Join(td, m.file))
		if err != nil {
			t.Fatal(err)
		}
		writeVersion(t, root, m.model, 1, map[string][]byte{"model.onnx": b})
		if m.noInfer != "" {
			// Loaded and described only; skip the 400 MB warm-up run.
			os.WriteFile(filepath.Join(root, m.model, "config.yaml"), []byte("warmup: false\n"), 0o644)
		}
	}
	ts := startServer(t, root)
	var served []string
	for _, m := range tdModels {
		t.Run(m.model, func(t *testing.T) {
			r := ts.do(t, "GET", "/v2/models/"+m.model+"/ready", "", nil)
			if r.code != 200 {
				t.Fatalf("not ready: %d; index %+v", r.code, ts.repo.Index())
			}
			md := ts.do(t, "GET", "/v2/models/"+m.model, "", nil)
			if md.code != 200 {
				t.Fatalf("metadata: %d %s", md.code, md.body)
			}
			if m.noInfer != "" {
				t.Logf("%s: loaded and described, not inferred: %s; metadata %s", m.file, m.noInfer, md.body)
				served = append(served, m.file+" (metadata only)")
				return
			}
			req := map[string]any{"id": "td-" + m.model}
			var ins []map[string]any
			for _, in := range m.inputs {
				data := in.data
				if u, ok := data.([]uint8); ok { // json.Marshal writes []uint8 as base64
					ints := make([]int, len(u))
					for i, v := range u {
						ints[i] = int(v)
					}
					data = ints
				}
				ins = append(ins, map[string]any{"name": in.name, "datatype": in.dt, "shape": in.shape, "data": data})
			}
			req["inputs"] = ins
			res := ts.post(t, "/v2/models/"+m.model+"/infer", req)
			if res.code != 200 {
				t.Fatalf("infer: %d %s", res.code, res.body)
			}
			var got struct {
				ID      string `json:"id"`
				Outputs []struct {
					Name     string          `json:"name"`
					Datatype string          `json:"datatype"`
					Shape    []int64         `json:"shape"`
					Data     json.RawMessage `json:"data"`
				} `json:"outputs"`
			}
			if err := json.Unmarshal(res.body, &got); err != nil {
				t.Fatal(err)
			}
			if got.ID != "td-"+m.model {
				t.Errorf("id %q not echoed", got.ID)
			}
			want := runDirect(t, filepath.Join(td, m.file), m.inputs)
			if len(got.Outputs) != len(want) {
				t.Fatalf("%d outputs, ORT gives %d", len(got.Outputs), len(want))
			}
			for i, w := range want {
				g := got.Outputs[i]
				if g.Name != w.name || fmt.Sprint(g.Shape) != fmt.Sprint(w.shape) {
					t.Errorf("output %d: %s %v, ORT %s %v", i, g.Name, g.Shape, w.name, w.shape)
				}
				if err := sameJSON(g.Data, w.json); err != nil {
					t.Errorf("output %q: %v\nserved %s\nORT    %s", g.Name, err, g.Data, w.json)
				}
			}
			served = append(served, m.file)
		})
	}
	t.Logf("test_data models served: %s", strings.Join(served, ", "))
}

type direct struct {
	name  string
	shape []int64
	json  []byte
}

// runDirect calls ONNX Runtime through onnxruntime_go directly, without
// the server's session code, and renders outputs the way the API documents.
func runDirect(t *testing.T, path string, inputs []tdInput) []direct {
	t.Helper()
	inInfo, outInfo, err := ortgo.GetInputOutputInfo(path)
	if err != nil {
		t.Fatal(err)
	}
	var inNames, outNames []string
	for _, i := range inInfo {
		inNames = append(inNames, i.Name)
	}
	for _, o := range outInfo {
		outNames = append(outNames, o.Name)
	}
	s, err := ortgo.NewDynamicAdvancedSession(path, inNames, outNames, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Destroy()
	vals := make([]ortgo.Value, len(inputs))
	for i, in := range inputs {
		sh := ortgo.Shape(in.shape)
		var v ortgo.Value
		switch d := in.data.(type) {
		case []int32:
			v, err = ortgo.NewTensor(sh, d)
		case []uint8:
			v, err = ortgo.NewTensor(sh, d)
		case []float64:
			v, err = ortgo.NewTensor(sh, d)
		case []string:
			st, e := ortgo.NewStringTensor(sh)
			if e == nil {
				e = st.SetContents(d)
			}
			v, err = st, e
		case []float32:
			switch in.dt {
			case tensor.FP32:
				v, err = ortgo.NewTensor(sh, d)
			default:
				conv, et := tensor.Float32ToHalf, ortgo.TensorElementDataType(ortgo.TensorElementDataTypeFloat16)
				if in.dt == tensor.BF16 {
					conv, et = tensor.Float32ToBFloat16, ortgo.TensorElementDataTypeBFloat16
				}
				buf := make([]byte, 2*len(d))
				for j, f := range d {
					h := conv(f)
					buf[2*j], buf[2*j+1] = byte(h), byte(h>>8)
				}
				v, err = ortgo.NewCustomDataTensor(sh, buf, et)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		defer v.Destroy()
		vals[i] = v
	}
	outs := make([]ortgo.Value, len(outInfo))
	for i, o := range outInfo {
		if o.DataType == ortgo.TensorElementDataTypeBFloat16 || o.DataType == ortgo.TensorElementDataTypeFloat16 {
			outs[i], err = ortgo.NewCustomDataTensor(o.Dimensions, make([]byte, 2*o.Dimensions.FlattenedSize()), o.DataType)
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Run(vals, outs); err != nil {
		t.Fatal(err)
	}
	var res []direct
	for i, o := range outs {
		defer o.Destroy()
		j, shape := render(t, o)
		res = append(res, direct{name: outNames[i], shape: shape, json: j})
	}
	return res
}

func render(t *testing.T, v ortgo.Value) ([]byte, []int64) {
	t.Helper()
	var x any
	shape := []int64(v.GetShape())
	switch o := v.(type) {
	case *ortgo.Tensor[float32]:
		x = o.GetData()
	case *ortgo.Tensor[float64]:
		x = o.GetData()
	case *ortgo.Tensor[int64]:
		x = o.GetData()
	case *ortgo.Tensor[int32]:
		x = o.GetData()
	case *ortgo.Tensor[int16]:
		x = o.GetData()
	case *ortgo.StringTensor:
		x, _ = o.GetContents()
	case *ortgo.CustomDataTensor:
		b := o.GetData()
		f := make([]float32, len(b)/2)
		for i := range f {
			h := uint16(b[2*i]) | uint16(b[2*i+1])<<8
			if ortgo.TensorElementDataType(o.DataType()) == ortgo.TensorElementDataTypeBFloat16 {
				f[i] = tensor.BFloat16ToFloat32(h)
			} else {
				f[i] = tensor.HalfToFloat32(h)
			}
		}
		x = f
	case *ortgo.Sequence:
		elems, _ := o.GetValues()
		var maps []map[string]float32
		for _, e := range elems {
			m := e.(*ortgo.Map)
			k, vv, _ := m.GetKeysAndValues()
			keys := k.(*ortgo.Tensor[int64]).GetData()
			vs := vv.(*ortgo.Tensor[float32]).GetData()
			mm := map[string]float32{}
			for i := range keys {
				mm[fmt.Sprint(keys[i])] = vs[i]
			}
			maps = append(maps, mm)
		}
		x = maps
		shape = []int64{int64(len(maps))}
	default:
		t.Fatalf("direct output %T not handled", v)
	}
	b, err := json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	return b, shape
}

// sameJSON compares two JSON documents; numbers must be equal as float32
// when they are not integers (FP32 outputs round-trip exactly).
func sameJSON(a, b []byte) error {
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		return err
	}
	if err := json.Unmarshal(b, &y); err != nil {
		return err
	}
	return same(x, y, "")
}

func same(x, y any, path string) error {
	switch xv := x.(type) {
	case []any:
		yv, ok := y.([]any)
		if !ok || len(xv) != len(yv) {
			return fmt.Errorf("%s: length or kind differs", path)
		}
		for i := range xv {
			if err := same(xv[i], yv[i], fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		yv, ok := y.(map[string]any)
		if !ok || len(xv) != len(yv) {
			return fmt.Errorf("%s: object differs", path)
		}
		for k := range xv {
			if err := same(xv[k], yv[k], path+"."+k); err != nil {
				return err
			}
		}
		return nil
	case float64:
		yv, ok := y.(float64)
		if !ok || (xv != yv && float32(xv) != float32(yv)) || math.IsNaN(xv) {
			return fmt.Errorf("%s: %v != %v", path, x, y)
		}
		return nil
	}
	if fmt.Sprint(x) != fmt.Sprint(y) {
		return fmt.Errorf("%s: %v != %v", path, x, y)
	}
	return nil
}
