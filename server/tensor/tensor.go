// Package tensor is the in-memory form of model inputs and outputs that the
// protocol codecs (oip, mlflowproto), the model runtime (ort), the repository
// and observers share. It has no cgo and no ONNX Runtime dependency.
package tensor

import (
	"fmt"
	"math"
	"strconv"
)

// DataType is an Open Inference Protocol datatype name.
type DataType string

// The tensor datatypes of the Open Inference Protocol that ONNX Runtime
// supports, plus BF16 (as Triton names it) and the two non-tensor kinds
// Flywheel uses for ONNX sequence and map outputs.
const (
	Bool   DataType = "BOOL"
	Uint8  DataType = "UINT8"
	Uint16 DataType = "UINT16"
	Uint32 DataType = "UINT32"
	Uint64 DataType = "UINT64"
	Int8   DataType = "INT8"
	Int16  DataType = "INT16"
	Int32  DataType = "INT32"
	Int64  DataType = "INT64"
	FP16   DataType = "FP16"
	BF16   DataType = "BF16"
	FP32   DataType = "FP32"
	FP64   DataType = "FP64"
	Bytes  DataType = "BYTES"

	// Sequence is an ONNX sequence (for example the list of per-row class
	// probability maps a scikit-learn classifier exported with ZipMap
	// returns). Its Data is a []any of JSON-ready values.
	Sequence DataType = "SEQUENCE"
	// Map is an ONNX map. Its Data is a map[string]any of JSON-ready values.
	Map DataType = "MAP"
)

// TensorTypes lists the datatypes a request input may carry.
var TensorTypes = []DataType{Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, FP16, BF16, FP32, FP64, Bytes}

// Valid reports whether d is a tensor datatype (not SEQUENCE or MAP).
func (d DataType) Valid() bool {
	for _, t := range TensorTypes {
		if d == t {
			return true
		}
	}
	return false
}

// Tensor is one named input or output.
//
// Data holds the row-major elements in a typed slice: []bool, []uint8,
// []uint16, []uint32, []uint64, []int8, []int16, []int32, []int64, []float32
// (FP32, and FP16/BF16 widened to float32), []float64 or []string (BYTES).
// SEQUENCE and MAP values hold JSON-ready Go values ([]any, map[string]any).
type Tensor struct {
	Name     string
	DataType DataType
	Shape    []int64
	Data     any
}

// Spec describes a model input or output: -1 in Shape is a dynamic dimension.
type Spec struct {
	Name     string   `json:"name"`
	DataType DataType `json:"datatype"`
	Shape    []int64  `json:"shape"`
}

// Len returns the number of elements in Data (0 for unknown kinds).
func (t Tensor) Len() int {
	switch d := t.Data.(type) {
	case []bool:
		return len(d)
	case []uint8:
		return len(d)
	case []uint16:
		return len(d)
	case []uint32:
		return len(d)
	case []uint64:
		return len(d)
	case []int8:
		return len(d)
	case []int16:
		return len(d)
	case []int32:
		return len(d)
	case []int64:
		return len(d)
	case []float32:
		return len(d)
	case []float64:
		return len(d)
	case []string:
		return len(d)
	case []any:
		return len(d)
	case map[string]any:
		return len(d)
	}
	return 0
}

// Rows returns the size of the first dimension (1 for a scalar), the number
// of inference rows the tensor carries.
func (t Tensor) Rows() int {
	if len(t.Shape) == 0 {
		return 1
	}
	return int(t.Shape[0])
}

// Elements returns the element count of a shape and false when a dimension
// is negative or the product exceeds limit.
func Elements(shape []int64, limit int64) (int64, bool) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		if d == 0 {
			n = 0
			continue
		}
		if n > limit/d {
			return 0, false
		}
		n *= d
	}
	if n > limit {
		return 0, false
	}
	return n, true
}

// Zeros returns a tensor of spec filled with zero values, with every
// dynamic (-1) dimension set to dynamic.
func Zeros(spec Spec, dynamic int64) (Tensor, error) {
	shape := make([]int64, len(spec.Shape))
	for i, d := range spec.Shape {
		if d < 0 {
			d = dynamic
		}
		shape[i] = d
	}
	n, ok := Elements(shape, math.MaxInt32)
	if !ok {
		return Tensor{}, fmt.Errorf("shape %v of %q is too large", shape, spec.Name)
	}
	data, err := MakeData(spec.DataType, int(n))
	if err != nil {
		return Tensor{}, fmt.Errorf("input %q: %w", spec.Name, err)
	}
	return Tensor{Name: spec.Name, DataType: spec.DataType, Shape: shape, Data: data}, nil
}

// MakeData allocates a zeroed typed slice of n elements for datatype d.
func MakeData(d DataType, n int) (any, error) {
	switch d {
	case Bool:
		return make([]bool, n), nil
	case Uint8:
		return make([]uint8, n), nil
	case Uint16:
		return make([]uint16, n), nil
	case Uint32:
		return make([]uint32, n), nil
	case Uint64:
		return make([]uint64, n), nil
	case Int8:
		return make([]int8, n), nil
	case Int16:
		return make([]int16, n), nil
	case Int32:
		return make([]int32, n), nil
	case Int64:
		return make([]int64, n), nil
	case FP16, BF16, FP32:
		return make([]float32, n), nil
	case FP64:
		return make([]float64, n), nil
	case Bytes:
		return make([]string, n), nil
	}
	return nil, fmt.Errorf("unsupported datatype %q", d)
}

// Float64s converts numeric and boolean data to float64, for observers that
// compute statistics. It returns false for strings and non-tensor values.
func (t Tensor) Float64s() ([]float64, bool) {
	switch d := t.Data.(type) {
	case []float64:
		return d, true
	case []float32:
		return conv(d), true
	case []int64:
		return conv(d), true
	case []int32:
		return conv(d), true
	case []int16:
		return conv(d), true
	case []int8:
		return conv(d), true
	case []uint64:
		return conv(d), true
	case []uint32:
		return conv(d), true
	case []uint16:
		return conv(d), true
	case []uint8:
		return conv(d), true
	case []bool:
		out := make([]float64, len(d))
		for i, b := range d {
			if b {
				out[i] = 1
			}
		}
		return out, true
	}
	return nil, false
}

type number interface {
	~float32 | ~float64 | ~int8 | ~int16 | ~int32 | ~int64 | ~uint8 | ~uint16 | ~uint32 | ~uint64
}

func conv[T number](in []T) []float64 {
	out := make([]float64, len(in))
	for i, v := range in {
		out[i] = float64(v)
	}
	return out
}

// ShapeString formats a shape as error messages show it: [2,16].
func ShapeString(shape []int64) string {
	b := []byte{'['}
	for i, v := range shape {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, v, 10)
	}
	return string(append(b, ']'))
}
