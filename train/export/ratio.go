package export

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/flywheel-ml/flywheel/train/export/onnxpb"
)

// RatioOutput is the name the wrapped model's own output gets in MultiplyByInput.
const RatioOutput = "ratio"

// MultiplyByInput rewires m so that its prediction is its former output
// times input column j: the graph of a model fitted to target ÷ feature j
// then returns the target. f is the input width.
func MultiplyByInput(m *onnxpb.ModelProto, j, f int) error {
	if j < 0 || j >= f {
		return fmt.Errorf("export: ratio column %d of %d", j, f)
	}
	g := m.GetGraph()
	found := false
	for _, n := range g.Node {
		for k, o := range n.Output {
			if o == OutputName {
				n.Output[k] = RatioOutput
				found = true
			}
		}
	}
	if !found {
		return fmt.Errorf("export: no node produces %q", OutputName)
	}
	raw := make([]byte, 8)
	binary.LittleEndian.PutUint64(raw, uint64(j))
	g.Initializer = append(g.Initializer, &onnxpb.TensorProto{Name: proto.String("ratio_column"), Dims: []int64{1},
		DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), RawData: raw})
	gather := &onnxpb.NodeProto{Name: proto.String("select_ratio_base"), OpType: proto.String("Gather"),
		Input: []string{InputName, "ratio_column"}, Output: []string{"ratio_base"}, Attribute: []*onnxpb.AttributeProto{attrInt("axis", 1)}}
	mul := &onnxpb.NodeProto{Name: proto.String("times_base"), OpType: proto.String("Mul"),
		Input: []string{RatioOutput, "ratio_base"}, Output: []string{OutputName}}
	g.Node = append(g.Node, gather, mul)
	return nil
}
