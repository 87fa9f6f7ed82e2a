// Package export turns fitted Flywheel models into ONNX graphs (IR version 8,
// default-domain opset 17, ai.onnx.ml opset 3 for trees). Every graph takes
// the raw feature vector, FP32 [N, F] named "features", does its own
// preprocessing (standardisation, one-hot of the day of week) and returns
// "prediction", FP32 [N, 1]. Encoding is deterministic: the same model gives
// the same bytes.
package export

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/flywheel-ml/flywheel/train/export/onnxpb"
	"github.com/flywheel-ml/flywheel/train/gbdt"
	"github.com/flywheel-ml/flywheel/train/mlp"
	"github.com/flywheel-ml/flywheel/train/preprocess"
	"github.com/flywheel-ml/flywheel/train/ridge"
)

// Graph constants shared with the model card and the server.
const (
	InputName   = "features"
	OutputName  = "prediction"
	BatchDim    = "N"
	IRVersion   = 8
	Opset       = 17
	MLDomain    = "ai.onnx.ml"
	MLOpset     = 3
	ProducerTag = "flywheel"
)

// Options describe the model for the graph's metadata. Nothing time- or
// host-dependent goes in, so the bytes depend only on the model.
type Options struct {
	GraphName       string            // e.g. "ridership_gbdt"
	ProducerVersion string            // trainer version
	DocString       string            // free text
	Metadata        map[string]string // metadata_props (written in key order)
}

// Ridge exports a ridge model that takes f raw features.
func Ridge(m *ridge.Model, f int, o Options) (*onnxpb.ModelProto, error) {
	g := newGraph()
	z, err := g.prep(m.Prep, f)
	if err != nil {
		return nil, err
	}
	w := make([]float32, len(m.Coef))
	for i, c := range m.Coef {
		w[i] = float32(c)
	}
	g.init("coef", []int64{1, int64(len(w))}, w)
	g.init("intercept", []int64{1}, []float32{float32(m.Intercept)})
	g.node("Gemm", "linear", []string{z, "coef", "intercept"}, []string{OutputName}, attrInt("transB", 1))
	return g.model(f, o, false), nil
}

// MLP exports a network that takes f raw features.
func MLP(m *mlp.Model, f int, o Options) (*onnxpb.ModelProto, error) {
	g := newGraph()
	x, err := g.prep(m.Prep, f)
	if err != nil {
		return nil, err
	}
	for i, l := range m.Layers {
		w := make([]float32, len(l.W))
		for k, v := range l.W {
			w[k] = float32(v)
		}
		b := make([]float32, len(l.B))
		for k, v := range l.B {
			b[k] = float32(v)
		}
		wn, bn := fmt.Sprintf("dense%d.weight", i), fmt.Sprintf("dense%d.bias", i)
		g.init(wn, []int64{int64(l.Out), int64(l.In)}, w)
		g.init(bn, []int64{int64(l.Out)}, b)
		out := fmt.Sprintf("dense%d", i)
		g.node("Gemm", out, []string{x, wn, bn}, []string{out}, attrInt("transB", 1))
		x = out
		if i < len(m.Layers)-1 {
			g.node("Relu", out+"_relu", []string{x}, []string{out + "_relu"})
			x = out + "_relu"
		}
	}
	g.init("target_scale", []int64{1}, []float32{float32(m.YScale)})
	g.init("target_mean", []int64{1}, []float32{float32(m.YMean)})
	g.node("Mul", "unscale", []string{x, "target_scale"}, []string{"scaled"})
	g.node("Add", "uncentre", []string{"scaled", "target_mean"}, []string{OutputName})
	return g.model(f, o, false), nil
}

// GBDT exports a tree ensemble as one ai.onnx.ml TreeEnsembleRegressor.
func GBDT(m *gbdt.Model, o Options) (*onnxpb.ModelProto, error) {
	if len(m.Trees) == 0 {
		return nil, fmt.Errorf("export: gbdt model has no trees")
	}
	var (
		treeIDs, nodeIDs, featIDs, trueIDs, falseIDs []int64
		values                                       []float32
		modes                                        [][]byte
		tTree, tNode, tID                            []int64
		tWeight                                      []float32
	)
	for ti, t := range m.Trees {
		for ni, n := range t.Nodes {
			treeIDs = append(treeIDs, int64(ti))
			nodeIDs = append(nodeIDs, int64(ni))
			if n.Leaf {
				featIDs = append(featIDs, 0)
				values = append(values, 0)
				modes = append(modes, []byte("LEAF"))
				trueIDs = append(trueIDs, 0)
				falseIDs = append(falseIDs, 0)
				tTree = append(tTree, int64(ti))
				tNode = append(tNode, int64(ni))
				tID = append(tID, 0)
				tWeight = append(tWeight, float32(n.Value))
				continue
			}
			featIDs = append(featIDs, int64(n.Feature))
			values = append(values, n.Threshold)
			modes = append(modes, []byte("BRANCH_LEQ"))
			trueIDs = append(trueIDs, int64(n.Left))
			falseIDs = append(falseIDs, int64(n.Right))
		}
	}
	g := newGraph()
	g.nodeIn(MLDomain, "TreeEnsembleRegressor", "trees", []string{InputName}, []string{OutputName},
		attrString("aggregate_function", "SUM"),
		attrFloats("base_values", []float32{float32(m.Base)}),
		attrInt("n_targets", 1),
		attrInts("nodes_falsenodeids", falseIDs),
		attrInts("nodes_featureids", featIDs),
		attrStrings("nodes_modes", modes),
		attrInts("nodes_nodeids", nodeIDs),
		attrInts("nodes_treeids", treeIDs),
		attrInts("nodes_truenodeids", trueIDs),
		attrFloats("nodes_values", values),
		attrString("post_transform", "NONE"),
		attrInts("target_ids", tID),
		attrInts("target_nodeids", tNode),
		attrInts("target_treeids", tTree),
		attrFloats("target_weights", tWeight),
	)
	return g.model(m.Features, o, true), nil
}

// Marshal encodes the model deterministically.
func Marshal(m *onnxpb.ModelProto) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("export: encoding ONNX: %w", err)
	}
	return b, nil
}

type graph struct {
	nodes []*onnxpb.NodeProto
	inits []*onnxpb.TensorProto
}

func newGraph() *graph { return &graph{} }

func (g *graph) init(name string, dims []int64, data []float32) {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	g.inits = append(g.inits, &onnxpb.TensorProto{Name: proto.String(name), Dims: dims,
		DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), RawData: raw})
}

func (g *graph) initInt64(name string, dims []int64, data []int64) {
	raw := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
	}
	g.inits = append(g.inits, &onnxpb.TensorProto{Name: proto.String(name), Dims: dims,
		DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), RawData: raw})
}

func (g *graph) node(op, name string, in, out []string, attrs ...*onnxpb.AttributeProto) {
	g.nodeIn("", op, name, in, out, attrs...)
}

func (g *graph) nodeIn(domain, op, name string, in, out []string, attrs ...*onnxpb.AttributeProto) {
	n := &onnxpb.NodeProto{Input: in, Output: out, Name: proto.String(name), OpType: proto.String(op), Attribute: attrs}
	if domain != "" {
		n.Domain = proto.String(domain)
	}
	g.nodes = append(g.nodes, n)
}

// prep adds the preprocessing of s for f raw input columns and returns the
// name of the transformed [N, s.Width()] tensor.
func (g *graph) prep(s *preprocess.Standardizer, f int) (string, error) {
	for _, j := range s.Numeric {
		if j < 0 || j >= f {
			return "", fmt.Errorf("export: preprocessing uses column %d of %d", j, f)
		}
	}
	idx := make([]int64, len(s.Numeric))
	mean := make([]float32, len(s.Numeric))
	scale := make([]float32, len(s.Numeric))
	for i, j := range s.Numeric {
		idx[i], mean[i], scale[i] = int64(j), float32(s.Mean[i]), float32(s.Scale[i])
	}
	k := int64(len(idx))
	g.initInt64("numeric_columns", []int64{k}, idx)
	g.init("mean", []int64{k}, mean)
	g.init("scale", []int64{k}, scale)
	g.node("Gather", "select_numeric", []string{InputName, "numeric_columns"}, []string{"numeric"}, attrInt("axis", 1))
	g.node("Sub", "centre", []string{"numeric", "mean"}, []string{"centred"})
	g.node("Div", "standardise", []string{"centred", "scale"}, []string{"standardised"})
	if s.OneHot < 0 || s.Categories == 0 {
		return "standardised", nil
	}
	if s.OneHot >= f {
		return "", fmt.Errorf("export: one-hot column %d of %d", s.OneHot, f)
	}
	cats := make([]float32, s.Categories)
	for c := range cats {
		cats[c] = float32(c)
	}
	g.initInt64("onehot_column", []int64{1}, []int64{int64(s.OneHot)})
	g.init("categories", []int64{1, int64(s.Categories)}, cats)
	g.node("Gather", "select_category", []string{InputName, "onehot_column"}, []string{"category"}, attrInt("axis", 1))
	g.node("Equal", "match_category", []string{"category", "categories"}, []string{"category_match"})
	g.node("Cast", "onehot", []string{"category_match"}, []string{"category_onehot"}, attrInt("to", int64(onnxpb.TensorProto_FLOAT)))
	g.node("Concat", "join", []string{"standardised", "category_onehot"}, []string{"transformed"}, attrInt("axis", 1))
	return "transformed", nil
}

func (g *graph) model(f int, o Options, ml bool) *onnxpb.ModelProto {
	gp := &onnxpb.GraphProto{
		Node:        g.nodes,
		Name:        proto.String(o.GraphName),
		Initializer: g.inits,
		Input:       []*onnxpb.ValueInfoProto{valueInfo(InputName, int64(f))},
		Output:      []*onnxpb.ValueInfoProto{valueInfo(OutputName, 1)},
	}
	if gp.GetName() == "" {
		gp.Name = proto.String("flywheel")
	}
	m := &onnxpb.ModelProto{
		IrVersion:       proto.Int64(IRVersion),
		ProducerName:    proto.String(ProducerTag),
		ProducerVersion: proto.String(o.ProducerVersion),
		Graph:           gp,
		OpsetImport:     []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(Opset)}},
	}
	if o.DocString != "" {
		m.DocString = proto.String(o.DocString)
	}
	if ml {
		m.OpsetImport = append(m.OpsetImport, &onnxpb.OperatorSetIdProto{Domain: proto.String(MLDomain), Version: proto.Int64(MLOpset)})
	}
	keys := make([]string, 0, len(o.Metadata))
	for k := range o.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		m.MetadataProps = append(m.MetadataProps, &onnxpb.StringStringEntryProto{Key: proto.String(k), Value: proto.String(o.Metadata[k])})
	}
	return m
}

func valueInfo(name string, cols int64) *onnxpb.ValueInfoProto {
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
			Shape: &onnxpb.TensorShapeProto{Dim: []*onnxpb.TensorShapeProto_Dimension{
				{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: BatchDim}},
				{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: cols}},
			}},
		}}},
	}
}

func attr(name string, t onnxpb.AttributeProto_AttributeType) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: t.Enum()}
}

func attrInt(name string, v int64) *onnxpb.AttributeProto {
	a := attr(name, onnxpb.AttributeProto_INT)
	a.I = proto.Int64(v)
	return a
}

func attrInts(name string, v []int64) *onnxpb.AttributeProto {
	a := attr(name, onnxpb.AttributeProto_INTS)
	a.Ints = v
	return a
}

func attrFloats(name string, v []float32) *onnxpb.AttributeProto {
	a := attr(name, onnxpb.AttributeProto_FLOATS)
	a.Floats = v
	return a
}

func attrString(name, v string) *onnxpb.AttributeProto {
	a := attr(name, onnxpb.AttributeProto_STRING)
	a.S = []byte(v)
	return a
}

func attrStrings(name string, v [][]byte) *onnxpb.AttributeProto {
	a := attr(name, onnxpb.AttributeProto_STRINGS)
	a.Strings = v
	return a
}
