// Package benchmodels writes the two benchmark ONNX models of the project's
// benchmark harness byte for byte: mlp_small (input[N,16] → probabilities[N,3])
// and mlp_wide (input[N,256] → probabilities[N,10]).
//
// The generator is a copy of the bench harness's models/gen (same field
// numbers, same splitmix64 weights), kept here so tests and `make bench` need
// nothing outside this repository. Protobuf wire encoding is hand-rolled (a
// varint and a length prefix are all ONNX's ModelProto needs here).
//
//	mlp_small  input[N,16]  -> Gemm 64   -> Relu -> Gemm 64   -> Relu -> Gemm 3  -> Softmax -> probabilities[N,3]
//	mlp_wide   input[N,256] -> Gemm 1024 -> Relu -> Gemm 1024 -> Relu -> Gemm 10 -> Softmax -> probabilities[N,10]
package benchmodels

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/flywheel-ml/flywheel/train/card"
)

// Spec describes one benchmark model.
type Spec struct {
	Name     string // file base name, also the served model name
	Sizes    []int  // layer widths: input features, hidden..., classes
	Seed     uint64
	SHA256   string // digest of the model bytes (the bench harness's SHA256SUMS)
	Input    string
	Output   string
	Features int
	Classes  int
}

// Specs are the two models, in the harness's order.
var Specs = []Spec{
	{Name: "mlp_small", Sizes: []int{16, 64, 64, 3}, Seed: 1, Input: "input", Output: "probabilities", Features: 16, Classes: 3,
		SHA256: "4a29315c7dff864072f16a2f21ae6fe99ffe83fc36f329b7da9890a82a081b44"},
	{Name: "mlp_wide", Sizes: []int{256, 1024, 1024, 10}, Seed: 2, Input: "input", Output: "probabilities", Features: 256, Classes: 10,
		SHA256: "79f44bf01048d5d162199f7c699e0f0d60682928831811999029b415be58b6d8"},
}

// Lookup returns the spec named name.
func Lookup(name string) (Spec, error) {
	for _, s := range Specs {
		if s.Name == name {
			return s, nil
		}
	}
	return Spec{}, fmt.Errorf("benchmodels: unknown model %q", name)
}

// Bytes returns the ONNX model bytes for s.
func (s Spec) Bytes() []byte { return mlp(s.Name, s.Sizes, s.Seed) }

// ReferenceRow returns the harness's reference input row: x[i] = (i%7)/7 - 0.5.
func (s Spec) ReferenceRow() []float32 {
	r := make([]float32, s.Features)
	for i := range r {
		r[i] = float32(i%7)/7 - 0.5
	}
	return r
}

// Write writes <dir>/<name>.onnx for every spec and returns the paths.
func Write(dir string) (map[string]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	paths := map[string]string{}
	for _, s := range Specs {
		p := filepath.Join(dir, s.Name+".onnx")
		if err := os.WriteFile(p, s.Bytes(), 0o644); err != nil {
			return nil, fmt.Errorf("benchmodels: %w", err)
		}
		paths[s.Name] = p
	}
	return paths, nil
}

// ONNX enum values.
const (
	tensorFloat  = 1 // TensorProto.DataType.FLOAT
	attrFloat    = 1 // AttributeProto.AttributeType.FLOAT
	attrInt      = 2 // AttributeProto.AttributeType.INT
	irVersion    = 8
	opsetVersion = 17
)

// protobuf wire types
const (
	wireVarint  = 0
	wireFixed32 = 5
	wireBytes   = 2
)

type msg []byte

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func (m msg) tag(field, wire int) msg { return appendVarint(m, uint64(field)<<3|uint64(wire)) }

func (m msg) sub(field int, b []byte) msg {
	m = m.tag(field, wireBytes)
	m = appendVarint(m, uint64(len(b)))
	return append(m, b...)
}
func (m msg) str(field int, s string) msg { return m.sub(field, []byte(s)) }
func (m msg) varint(field int, v uint64) msg {
	return appendVarint(m.tag(field, wireVarint), v)
}
func (m msg) fixed32(field int, v uint32) msg {
	return binary.LittleEndian.AppendUint32(m.tag(field, wireFixed32), v)
}

// TensorProto: dims=1 (packed int64), data_type=2, name=8, raw_data=9 (little-endian)
func tensor(name string, dims []int64, data []float32) []byte {
	var packed []byte
	for _, d := range dims {
		packed = appendVarint(packed, uint64(d))
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
	var shape msg
	for _, d := range dims {
		var dim msg
		if d < 0 {
			dim = dim.str(2, "N")
		} else {
			dim = dim.varint(1, uint64(d))
		}
		shape = shape.sub(1, dim)
	}
	var tt msg
	tt = tt.varint(1, tensorFloat)
	tt = tt.sub(2, shape)
	var typ msg
	typ = typ.sub(1, tt)
	var m msg
	m = m.str(1, name)
	m = m.sub(2, typ)
	return m
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

// Card returns a model card for s (features f00, f01, …) whose reference
// distribution is ten equal bins over [-1, 1] for every feature and over
// [0, 1] for the prediction (the first output column), so that a server
// with drift monitoring on does the full per-request drift work for the
// benchmark models.
func (s Spec) Card() *card.Card {
	names := make([]string, s.Features)
	feats := make(map[string]card.Histogram, s.Features)
	for i := range names {
		names[i] = fmt.Sprintf("f%02d", i)
		feats[names[i]] = uniform(-1, 1, 10)
	}
	pred := uniform(0, 1, 10)
	return &card.Card{
		Name: s.Name, Version: 1, Task: "classification",
		Inputs:    []card.Tensor{{Name: s.Input, DataType: "FP32", Shape: []int64{-1, int64(s.Features)}, Features: names}},
		Outputs:   []card.Tensor{{Name: s.Output, DataType: "FP32", Shape: []int64{-1, int64(s.Classes)}}},
		Training:  card.Training{Algorithm: "benchmark"},
		Reference: &card.Reference{Features: feats, Prediction: &pred},
	}
}

func uniform(lo, hi float64, bins int) card.Histogram {
	h := card.Histogram{Edges: make([]float64, bins+1), Proportions: make([]float64, bins)}
	for i := range h.Edges {
		h.Edges[i] = lo + (hi-lo)*float64(i)/float64(bins)
	}
	for i := range h.Proportions {
		h.Proportions[i] = 1 / float64(bins)
	}
	return h
}
