// Package fromcard describes a model repository version (its card and ONNX
// graph) as an MLflow Model (tracker/mlmodel). It is apart from mlmodel so
// that readers of MLmodel files (server/modelsource) do not import the ONNX
// protobuf code of the trainer.
package fromcard

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/tracker/mlmodel"
	"github.com/flywheel-ml/flywheel/train/export/onnxpb"
)

// Model describes a model repository version (its card and ONNX graph)
// as an MLflow Model logged in runID under artifactPath: the signature from
// the card's tensors, the feature names, the graph's IR version and opsets,
// and an input example of one typical row (every feature's training
// median, from the card's reference histograms).
func Model(c *modelrepo.Card, graph []byte, runID, artifactPath string) (mlmodel.Model, error) {
	if c == nil {
		return mlmodel.Model{}, fmt.Errorf("mlmodel: no model card")
	}
	m := mlmodel.Model{RunID: runID, ArtifactPath: artifactPath, Data: modelrepo.ModelFile, Size: int64(len(graph)),
		FeatureNames: c.FeatureNames(), Created: c.CreatedAt,
		Metadata: map[string]any{"flywheel_model": c.Name, "flywheel_card": modelrepo.CardFile, "task": c.Task}}
	var g onnxpb.ModelProto
	if err := proto.Unmarshal(graph, &g); err != nil {
		return m, fmt.Errorf("mlmodel: reading %s: %w", modelrepo.ModelFile, err)
	}
	m.IRVersion = g.GetIrVersion()
	m.Opsets = map[string]int64{}
	for _, o := range g.GetOpsetImport() {
		dom := o.GetDomain()
		if dom == "" {
			dom = "ai.onnx"
		}
		m.Opsets[dom] = o.GetVersion()
	}
	for _, t := range c.Inputs {
		m.Inputs = append(m.Inputs, mlmodel.Tensor{Name: t.Name, DType: NumpyType(t.DataType), Shape: t.Shape})
	}
	for _, t := range c.Outputs {
		m.Outputs = append(m.Outputs, mlmodel.Tensor{Name: t.Name, DType: NumpyType(t.DataType), Shape: t.Shape})
	}
	if row := typicalRow(c); row != nil {
		m.Example = [][]float64{row}
	}
	return m, m.Validate()
}

// NumpyType maps an OIP datatype to the numpy dtype of an MLflow tensor spec.
func NumpyType(oip string) string {
	switch oip {
	case "FP32":
		return "float32"
	case "FP64":
		return "float64"
	case "FP16":
		return "float16"
	case "INT64":
		return "int64"
	case "INT32":
		return "int32"
	case "INT16":
		return "int16"
	case "INT8":
		return "int8"
	case "UINT8":
		return "uint8"
	case "BOOL":
		return "bool"
	case "BYTES":
		return "object"
	}
	return strings.ToLower(oip)
}

// typicalRow is every feature's training median, read off the card's
// reference histograms (nil without them).
func typicalRow(c *modelrepo.Card) []float64 {
	names := c.FeatureNames()
	if len(names) == 0 || c.Reference == nil {
		return nil
	}
	row := make([]float64, len(names))
	for i, n := range names {
		h, ok := c.Reference.Features[n]
		if !ok || len(h.Edges) < 2 {
			return nil
		}
		cum := 0.0
		row[i] = h.Edges[len(h.Edges)-1]
		for j, p := range h.Proportions {
			if cum+p >= 0.5 { // the median lies in bin j: interpolate
				f := 0.0
				if p > 0 {
					f = (0.5 - cum) / p
				}
				row[i] = h.Edges[j] + f*(h.Edges[j+1]-h.Edges[j])
				break
			}
			cum += p
		}
	}
	return row
}
