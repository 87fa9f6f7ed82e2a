package mlmodel

import (
	"strings"
	"testing"
	"time"
)

func TestFilesParseRoundTrip(t *testing.T) {
	m := Model{RunID: "r1", ArtifactPath: "model", Size: 10, IRVersion: 8, Opsets: map[string]int64{"ai.onnx": 17},
		Inputs:       []Tensor{{Name: "features", DType: "float32", Shape: []int64{-1, 2}}},
		Outputs:      []Tensor{{Name: "prediction", DType: "float32", Shape: []int64{-1, 1}}},
		FeatureNames: []string{"a", "b"}, Example: [][]float64{{1, 2}}, Created: time.Unix(0, 0)}
	files, err := m.Files()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{FileMLmodel, FileInputExample, FileRequirements, FilePythonEnv, FileConda} {
		if len(files[f]) == 0 {
			t.Errorf("%s missing", f)
		}
	}
	info, err := Parse(files[FileMLmodel])
	if err != nil {
		t.Fatal(err)
	}
	if d, err := info.ONNXData(); err != nil || d != "model.onnx" || info.RunID != "r1" ||
		info.Flavors["python_function"]["loader_module"] != "mlflow.onnx" || !strings.Contains(info.Signature.Inputs, `"name":"features"`) {
		t.Errorf("parsed %+v, data %q %v", info, d, err)
	}
	if string(files[FileInputExample]) != `{"inputs":{"features":[[1,2]]}}` {
		t.Errorf("input example %s", files[FileInputExample])
	}
	bad := m
	bad.Example = [][]float64{{1}}
	if _, err := bad.Files(); err == nil {
		t.Error("an example row of the wrong width: no error")
	}
}

func TestONNXData(t *testing.T) {
	tests := []struct {
		mlmodel, want string
		ok            bool
	}{
		{"flavors:\n  onnx:\n    data: model.onnx\n", "model.onnx", true},
		{"flavors:\n  onnx: {}\n", "model.onnx", true},
		{"flavors:\n  onnx:\n    data: ../../etc/passwd\n", "", false},
		{"flavors:\n  onnx:\n    data: /abs.onnx\n", "", false},
		{"flavors:\n  sklearn:\n    pickled_model: model.pkl\n", "", false},
	}
	for _, tc := range tests {
		info, err := Parse([]byte(tc.mlmodel))
		if err != nil {
			t.Fatalf("%q: %v", tc.mlmodel, err)
		}
		got, err := info.ONNXData()
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%q: %q %v, want %q ok=%v", tc.mlmodel, got, err, tc.want, tc.ok)
		}
	}
	if _, err := Parse([]byte("run_id: x\n")); err == nil {
		t.Error("an MLmodel without flavors: no error")
	}
}
