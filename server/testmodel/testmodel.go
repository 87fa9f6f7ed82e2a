// Package testmodel writes small deterministic ONNX models for tests and
// benchmarks, without Python: the multi-layer perceptrons of the shared
// benchmark (../shared/bench/models/gen, copied here so tests are
// self-contained) hand-encoded with protowire.
//
//	MLPSmall: input[N,16] -> Gemm 64 -> Relu -> Gemm 64 -> Relu -> Gemm 3 -> Softmax -> probabilities[N,3]
//
// For the reference row input[i] = (i%7)/7 - 0.5, MLPSmall answers
// [0.3695846, 0.3224185, 0.3079968].
package testmodel

import (
	"encoding/binary"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// ONNX enum values
const (
	tensorFloat  = 1 // TensorProto.DataType.FLOAT
	attrFloat    = 1 // AttributeProto.AttributeType.FLOAT
	attrInt      = 2 // AttributeProto.AttributeType.INT
	irVersion    = 8
	opsetVersion = 17
)

type msg []byte

func (m msg) str(field protowire.Number, s string) msg {
	m = protowire.AppendTag(m, field, protowire.BytesType)
	return protowire.AppendString(m, s)
}
func (m msg) sub(field protowire.Number, b []byte) msg {
	m = protowire.AppendTag(m, field, protowire.BytesType)
	return protowire.AppendBytes(m, b)
}
func (m msg) varint(field protowire.Number, v uint64) msg {
	m = protowire.AppendTag(m, field, protowire.VarintType)
	return protowire.AppendVarint(m, v)
}
func (m msg) fixed32(field protowire.Number, v uint32) msg {
	m = protowire.AppendTag(m, field, protowire.Fixed32Type)
	return protowire.AppendFixed32(m, v)
}

// TensorProto: dims=1 (packed int64), data_type=2, name=8, raw_data=9 (little-endian)
func tensor(name string, dims []int64, data []float32) []byte {
	var packed []byte
	for _, d := range dims {
		packed = protowire.AppendVarint(packed, uint64(d))
	}
	raw := make([]byte, 4*len(data))
	for i, f := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(f))
	}
	var m msg
	m = m.sub(1, packed)
	m = m.varint(2, tensorFloat)
	m = m.str(8, name)
	m = m.sub(9, raw)
	return m
}

// AttributeProto: name=1, f=2, i=3, type=20
func attrI(name string, v int64) []byte {
	var m msg
	m = m.str(1, name)
	m = m.varint(3, uint64(v))
	m = m.varint(20, attrInt)
	return m
}
func attrF(name string, v float32) []byte {
	var m msg
	m = m.str(1, name)
	m = m.fixed32(2, math.Float32bits(v))
	m = m.varint(20, attrFloat)
	return m
}

// NodeProto: input=1, output=2, name=3, op_type=4, attribute=5
func node(name, op string, in, out []string, attrs ...[]byte) []byte {
	var m msg
	for _, s := range in {
		m = m.str(1, s)
	}
	for _, s := range out {
		m = m.str(2, s)
	}
	m = m.str(3, name)
	m = m.str(4, op)
	for _, a := range attrs {
		m = m.sub(5, a)
	}
	return m
}

// ValueInfoProto{name=1, type=2{TypeProto.tensor_type=1{elem_type=1, shape=2{dim=1{dim_value=1|dim_param=2}}}}}
// A dim < 0 is written as the symbolic dim "N".
func valueInfo(name string, dims []int64) []byte {
	return tensorValueInfo(name, tensorFloat, dims, func(int) string { return "N" })
}

type splitmix struct{ s uint64 }

func (r *splitmix) next() uint64 {
	r.s += 0x9E3779B97F4A7C15
	z := r.s
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// uniform in [-a, a)
func (r *splitmix) uniform(a float64) float32 {
	u := float64(r.next()>>11) / float64(uint64(1)<<53)
	return float32((2*u - 1) * a)
}

// mlp builds input[N,sizes[0]] -> (Gemm -> Relu)* -> Gemm -> Softmax.
func mlp(graphName string, sizes []int, seed uint64) []byte {
	rng := &splitmix{s: seed}
	var g msg
	var inits [][]byte
	prev := "input"
	nLayers := len(sizes) - 1
	for l := 0; l < nLayers; l++ {
		in, out := sizes[l], sizes[l+1]
		a := 1 / math.Sqrt(float64(in))
		w := make([]float32, out*in) // [out,in], used with transB=1 like exported nn.Linear
		for i := range w {
			w[i] = rng.uniform(a)
		}
		b := make([]float32, out)
		for i := range b {
			b[i] = rng.uniform(a)
		}
		wn, bn := fmt.Sprintf("fc%d.weight", l+1), fmt.Sprintf("fc%d.bias", l+1)
		inits = append(inits, tensor(wn, []int64{int64(out), int64(in)}, w), tensor(bn, []int64{int64(out)}, b))
		gout := fmt.Sprintf("fc%d", l+1)
		g = g.sub(1, node(fmt.Sprintf("Gemm_%d", l+1), "Gemm", []string{prev, wn, bn}, []string{gout},
			attrF("alpha", 1), attrF("beta", 1), attrI("transB", 1)))
		prev = gout
		if l < nLayers-1 {
			rout := fmt.Sprintf("relu%d", l+1)
			g = g.sub(1, node(fmt.Sprintf("Relu_%d", l+1), "Relu", []string{prev}, []string{rout}))
			prev = rout
		}
	}
	g = g.sub(1, node("Softmax", "Softmax", []string{prev}, []string{"probabilities"}, attrI("axis", -1)))
	g = g.str(2, graphName) // GraphProto.name
	for _, t := range inits {
		g = g.sub(5, t) // GraphProto.initializer
	}
	g = g.sub(11, valueInfo("input", []int64{-1, int64(sizes[0])}))                    // GraphProto.input
	g = g.sub(12, valueInfo("probabilities", []int64{-1, int64(sizes[len(sizes)-1])})) // GraphProto.output

	var opset msg
	opset = opset.str(1, "")
	opset = opset.varint(2, opsetVersion)
	var m msg
	m = m.varint(1, irVersion)             // ir_version
	m = m.str(2, "peers-models-gen")       // producer_name
	m = m.str(3, "1")                      // producer_version
	m = m.str(6, fmt.Sprintf("%v", sizes)) // doc_string
	m = m.sub(7, g)                        // graph
	m = m.sub(8, opset)                    // opset_import
	return m
}

// MLPSmall returns the bytes of mlp_small.onnx (identical to the shared
// benchmark's file).
func MLPSmall() []byte { return mlp("mlp_small", []int{16, 64, 64, 3}, 1) }

// MLP returns an MLP with the given layer sizes and weight seed; different
// seeds give different answers, which tests use to tell versions apart.
func MLP(name string, sizes []int, seed uint64) []byte { return mlp(name, sizes, seed) }

// ReferenceRow returns the benchmark's reference input of n features.
func ReferenceRow(n int) []float32 {
	row := make([]float32, n)
	for i := range row {
		row[i] = float32(i%7)/7 - 0.5
	}
	return row
}

// MLPSmallReference is MLPSmall's answer for ReferenceRow(16).
var MLPSmallReference = []float32{0.3695846, 0.3224185, 0.3079968}

// tensorInt64 is TensorProto.DataType.INT64.
const tensorInt64 = 7

// typedValueInfo is valueInfo with an element type and one symbolic name
// per dynamic dimension (d0, d1, ...).
func typedValueInfo(name string, elem uint64, dims []int64) []byte {
	return tensorValueInfo(name, elem, dims, func(i int) string { return fmt.Sprintf("d%d", i) })
}

// tensorValueInfo is the ValueInfoProto of a tensor of elem with dims; a
// dim < 0 is written as the symbolic dim symbolic(its index).
func tensorValueInfo(name string, elem uint64, dims []int64, symbolic func(i int) string) []byte {
	var shape msg
	for i, d := range dims {
		var dim msg
		if d < 0 {
			dim = dim.str(2, symbolic(i))
		} else {
			dim = dim.varint(1, uint64(d))
		}
		shape = shape.sub(1, dim)
	}
	var tt msg
	tt = tt.varint(1, elem)
	tt = tt.sub(2, shape)
	var typ msg
	typ = typ.sub(1, tt)
	var m msg
	m = m.str(1, name)
	m = m.sub(2, typ)
	return m
}

// testModel wraps graph g in a ModelProto (producer flywheel-testmodel,
// default opset).
func testModel(g msg) []byte {
	var opset msg
	opset = opset.str(1, "")
	opset = opset.varint(2, opsetVersion)
	var m msg
	m = m.varint(1, irVersion)
	m = m.str(2, "flywheel-testmodel")
	m = m.sub(7, g)
	m = m.sub(8, opset)
	return m
}

// ConstantOfShape returns a model whose output size comes from its input's
// values: shape INT64[2] -> ConstantOfShape -> out FP32[d0,d1] of zeros. A
// request for [1, 100000000] asks for 10^8 elements (hostile tests).
func ConstantOfShape() []byte {
	var g msg
	g = g.sub(1, node("ConstantOfShape", "ConstantOfShape", []string{"shape"}, []string{"out"}))
	g = g.str(2, "constant_of_shape")
	g = g.sub(11, typedValueInfo("shape", tensorInt64, []int64{2}))
	g = g.sub(12, typedValueInfo("out", tensorFloat, []int64{-1, -1}))
	return testModel(g)
}

// ExternalData returns a model whose weight lives outside model.onnx: out
// = x + w, x FP32[-1,4], w FP32[4] stored as ONNX external data at location
// (relative to the model's folder; offset 0, 16 bytes). WeightBytes gives
// the 16 bytes of a weight file.
func ExternalData(location string) []byte {
	var entry = func(k, v string) []byte {
		var m msg
		m = m.str(1, k)
		m = m.str(2, v)
		return m
	}
	var packed []byte
	packed = protowire.AppendVarint(packed, 4)
	var w msg
	w = w.sub(1, packed)         // dims [4]
	w = w.varint(2, tensorFloat) // data_type
	w = w.str(8, "w")            // name
	w = w.sub(13, entry("location", location))
	w = w.sub(13, entry("offset", "0"))
	w = w.sub(13, entry("length", "16"))
	w = w.varint(14, 1) // data_location = EXTERNAL
	var g msg
	g = g.sub(1, node("Add", "Add", []string{"x", "w"}, []string{"out"}))
	g = g.str(2, "external_data")
	g = g.sub(5, w)
	g = g.sub(11, typedValueInfo("x", tensorFloat, []int64{-1, 4}))
	g = g.sub(12, typedValueInfo("out", tensorFloat, []int64{-1, 4}))
	return testModel(g)
}

// WeightBytes encodes four float32 values little-endian (an external data
// file for ExternalData).
func WeightBytes(v [4]float32) []byte {
	b := make([]byte, 16)
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}
