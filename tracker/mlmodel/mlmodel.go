// Package mlmodel writes and reads the MLflow Model format for an ONNX
// graph: the MLmodel file (an onnx flavor and a python_function flavor with
// loader_module mlflow.onnx), the tensor signature, an input example and the
// environment files, laid out as MLflow's own mlflow.onnx.log_model does, so
// that MLflow's registry, UI and Python client (mlflow.models.get_model_info,
// mlflow.pyfunc.load_model) treat a Flywheel model as an MLflow Model.
package mlmodel

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// File names inside a model directory (MLflow's).
const (
	FileMLmodel      = "MLmodel"
	FileInputExample = "input_example.json"
	FileRequirements = "requirements.txt"
	FilePythonEnv    = "python_env.yaml"
	FileConda        = "conda.yaml"
	// DefaultData is the ONNX graph's file name.
	DefaultData = "model.onnx"
)

// TagHistory is MLflow's run tag listing the models logged in the run
// (HistoryTag); the runs table's Models column reads it.
const TagHistory = "mlflow.log-model.history"

// Versions written into the files: the MLflow release the files follow,
// and the onnx / onnxruntime packages a Python reader needs.
const (
	MLflowVersion      = "2.10.2"
	PythonVersion      = "3.11"
	ONNXPackage        = "onnx==1.15.0"
	ONNXRuntimePackage = "onnxruntime>=1.16"
)

// Tensor is one named input or output of the graph.
type Tensor struct {
	Name  string
	DType string  // numpy dtype: float32, float64, int64, …
	Shape []int64 // -1 for a dynamic dimension
}

// Model describes the ONNX graph to write as an MLflow Model.
type Model struct {
	RunID        string // the run the model is logged in
	ArtifactPath string // e.g. "model"
	Data         string // graph file inside the directory (default model.onnx)
	Size         int64  // bytes of the graph
	IRVersion    int64  // ONNX IR version of the graph
	Opsets       map[string]int64
	Inputs       []Tensor
	Outputs      []Tensor
	// FeatureNames name the columns of the first input, in order; they go
	// into the MLmodel metadata (a tensor signature has no column names).
	FeatureNames []string
	// Example is one or more rows of the first input.
	Example  [][]float64
	Metadata map[string]any // more metadata (model name, version, card digest…)
	Created  time.Time
}

// Validate checks what MLflow needs.
func (m Model) Validate() error {
	var errs []error
	if len(m.Inputs) == 0 || len(m.Outputs) == 0 {
		errs = append(errs, errors.New("a model needs inputs and outputs"))
	}
	for _, t := range append(append([]Tensor{}, m.Inputs...), m.Outputs...) {
		if t.Name == "" || t.DType == "" || len(t.Shape) == 0 {
			errs = append(errs, fmt.Errorf("tensor %+v: name, dtype and shape are required", t))
		}
	}
	if len(m.FeatureNames) > 0 && len(m.Inputs) > 0 {
		if s := m.Inputs[0].Shape; len(s) != 2 || (s[1] != -1 && int(s[1]) != len(m.FeatureNames)) {
			errs = append(errs, fmt.Errorf("%d feature names do not fit input shape %v", len(m.FeatureNames), s))
		}
	}
	for i, row := range m.Example {
		if len(m.FeatureNames) > 0 && len(row) != len(m.FeatureNames) {
			errs = append(errs, fmt.Errorf("example row %d has %d values, want %d", i, len(row), len(m.FeatureNames)))
		}
	}
	return errors.Join(errs...)
}

type tensorSpec struct {
	Type string `json:"type"`
	Spec struct {
		DType string  `json:"dtype"`
		Shape []int64 `json:"shape"`
	} `json:"tensor-spec"`
	Name string `json:"name,omitempty"`
}

func signatureJSON(ts []Tensor) (string, error) {
	specs := make([]tensorSpec, len(ts))
	for i, t := range ts {
		specs[i].Type, specs[i].Name = "tensor", t.Name
		specs[i].Spec.DType, specs[i].Spec.Shape = t.DType, t.Shape
	}
	b, err := json.Marshal(specs)
	return string(b), err
}

// doc is the MLmodel document (without the input example info).
func (m Model) doc() (map[string]any, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("mlmodel: %w", err)
	}
	data := m.Data
	if data == "" {
		data = DefaultData
	}
	in, err := signatureJSON(m.Inputs)
	if err != nil {
		return nil, err
	}
	out, err := signatureJSON(m.Outputs)
	if err != nil {
		return nil, err
	}
	created := m.Created
	if created.IsZero() {
		created = time.Now()
	}
	meta := map[string]any{}
	for k, v := range m.Metadata {
		meta[k] = v
	}
	if len(m.FeatureNames) > 0 {
		meta["feature_names"] = m.FeatureNames
	}
	if m.IRVersion > 0 {
		meta["onnx_ir_version"] = m.IRVersion
	}
	if len(m.Opsets) > 0 {
		meta["onnx_opsets"] = m.Opsets
	}
	doc := map[string]any{
		"artifact_path": m.ArtifactPath,
		"flavors": map[string]any{
			"onnx": map[string]any{
				"code":         nil,
				"data":         data,
				"onnx_version": strings.TrimPrefix(ONNXPackage, "onnx=="),
				"providers":    []string{"CPUExecutionProvider"},
			},
			"python_function": map[string]any{
				"data":           data,
				"env":            map[string]string{"conda": FileConda, "virtualenv": FilePythonEnv},
				"loader_module":  "mlflow.onnx",
				"python_version": PythonVersion,
			},
		},
		"mlflow_version":   MLflowVersion,
		"model_size_bytes": m.Size,
		"model_uuid":       uuidFrom(m.RunID, m.ArtifactPath, created),
		"run_id":           m.RunID,
		"signature":        map[string]any{"inputs": in, "outputs": out, "params": nil},
		"utc_time_created": created.UTC().Format("2006-01-02 15:04:05.000000"),
	}
	if len(meta) > 0 {
		doc["metadata"] = meta
	}
	return doc, nil
}

// HistoryTag is the value of the run tag mlflow.log-model.history for this
// model: a JSON list with the model's MLmodel fields (without metadata),
// as MLflow's log_model sets it; the runs table's Models column reads it.
func (m Model) HistoryTag() (string, error) {
	doc, err := m.doc()
	if err != nil {
		return "", err
	}
	delete(doc, "metadata")
	b, err := json.Marshal([]any{doc})
	return string(b), err
}

// Files returns the model directory's files (MLmodel, input_example.json,
// requirements.txt, python_env.yaml, conda.yaml) by name; the graph itself
// is not among them.
func (m Model) Files() (map[string][]byte, error) {
	doc, err := m.doc()
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	if len(m.Example) > 0 {
		doc["saved_input_example_info"] = map[string]any{"artifact_path": FileInputExample, "type": "ndarray", "format": "tf-serving"}
		ex, err := json.Marshal(map[string]any{"inputs": map[string]any{m.Inputs[0].Name: m.Example}})
		if err != nil {
			return nil, fmt.Errorf("mlmodel: input example: %w", err)
		}
		files[FileInputExample] = ex
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("mlmodel: %w", err)
	}
	files[FileMLmodel] = buf.Bytes()
	reqs := "mlflow==" + MLflowVersion + "\n" + ONNXPackage + "\n" + ONNXRuntimePackage + "\n"
	files[FileRequirements] = []byte(reqs)
	files[FilePythonEnv] = []byte("python: " + PythonVersion + "\nbuild_dependencies:\n- pip\ndependencies:\n- -r requirements.txt\n")
	files[FileConda] = []byte("channels:\n- conda-forge\ndependencies:\n- python=" + PythonVersion + "\n- pip\n- pip:\n  - mlflow==" +
		MLflowVersion + "\n  - " + ONNXPackage + "\n  - " + ONNXRuntimePackage + "\nname: mlflow-env\n")
	return files, nil
}

// uuidFrom derives a stable model uuid from the run, path and time (the
// same inputs give the same files, so a replayed upload is identical).
func uuidFrom(runID, path string, t time.Time) string {
	h := sha256.Sum256([]byte(runID + "/" + path + "/" + t.UTC().Format(time.RFC3339Nano)))
	return hex.EncodeToString(h[:16])
}

// Info is what a reader needs from an MLmodel file.
type Info struct {
	Flavors   map[string]map[string]any `yaml:"flavors"`
	RunID     string                    `yaml:"run_id"`
	Signature struct {
		Inputs  string `yaml:"inputs"`
		Outputs string `yaml:"outputs"`
	} `yaml:"signature"`
	Metadata map[string]any `yaml:"metadata"`
}

// Parse reads an MLmodel file.
func Parse(b []byte) (Info, error) {
	var i Info
	if err := yaml.Unmarshal(b, &i); err != nil {
		return i, fmt.Errorf("MLmodel: %w", err)
	}
	if len(i.Flavors) == 0 {
		return i, errors.New("MLmodel: no flavors")
	}
	return i, nil
}

// ONNXData is the graph's file inside the model directory, from the onnx
// flavor; it is an error when the model has no onnx flavor.
func (i Info) ONNXData() (string, error) {
	f, ok := i.Flavors["onnx"]
	if !ok {
		names := make([]string, 0, len(i.Flavors))
		for k := range i.Flavors {
			names = append(names, k)
		}
		return "", fmt.Errorf("MLmodel has no onnx flavor (flavors: %s): Flywheel serves ONNX models", strings.Join(names, ", "))
	}
	d, _ := f["data"].(string)
	if d == "" {
		d = DefaultData
	}
	if strings.Contains(d, "..") || strings.HasPrefix(d, "/") {
		return "", fmt.Errorf("MLmodel onnx data %q: not a path inside the model directory", d)
	}
	return d, nil
}
