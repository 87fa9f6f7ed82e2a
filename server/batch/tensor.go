package batch

import (
	"context"
	"fmt"
	"slices"

	"github.com/flywheel-ml/flywheel/server/tensor"
)

// Tensor is server/tensor.Tensor: a named, typed, row-major tensor as it
// travels between the API handler and the session.
type Tensor = tensor.Tensor

// DataType is an Open Inference Protocol datatype name ("FP32", ...).
type DataType = tensor.DataType

// Runner runs a model once: inputs in, every output out. Implementations must
// be safe for concurrent use and must not keep references to input data after
// Run returns (the batcher reuses merge buffers).
type Runner interface {
	Run(ctx context.Context, inputs []Tensor) ([]Tensor, error)
}

// RunnerFunc adapts a function to Runner.
type RunnerFunc func(ctx context.Context, inputs []Tensor) ([]Tensor, error)

// Run calls f.
func (f RunnerFunc) Run(ctx context.Context, inputs []Tensor) ([]Tensor, error) {
	return f(ctx, inputs)
}

// rows returns dimension 0 shared by every input, or -1 when the request
// cannot be merged (no inputs, a scalar, or inputs that disagree on dim 0).
func rows(in []Tensor) int {
	if len(in) == 0 {
		return -1
	}
	n := int64(-1)
	for _, t := range in {
		if len(t.Shape) == 0 {
			return -1
		}
		if n >= 0 && t.Shape[0] != n {
			return -1
		}
		n = t.Shape[0]
	}
	if n < 1 {
		return -1
	}
	return int(n)
}

// compatible reports whether two requests can share a session run: the same
// inputs in the same order, with the same datatypes and trailing dimensions.
func compatible(a, b []Tensor) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].DataType != b[i].DataType || !slices.Equal(a[i].Shape[1:], b[i].Shape[1:]) {
			return false
		}
	}
	return true
}

func concatT[T any](dst []T, parts []any) ([]T, bool) {
	for _, p := range parts {
		s, ok := p.([]T)
		if !ok {
			return nil, false
		}
		dst = append(dst, s...)
	}
	return dst, true
}

// scratch holds one worker's reusable merge buffers.
type scratch struct {
	f32 []float32
}

// concat joins the Data of parts (all of one element type) into one slice of
// total elements. FP32 reuses the worker's scratch buffer.
func (s *scratch) concat(parts []any, total int) (any, error) {
	var (
		out any
		ok  bool
	)
	switch parts[0].(type) {
	case []float32:
		if cap(s.f32) < total {
			s.f32 = make([]float32, 0, total)
		}
		s.f32, ok = concatT(s.f32[:0], parts)
		out = s.f32
	case []float64:
		out, ok = concatT(make([]float64, 0, total), parts)
	case []int8:
		out, ok = concatT(make([]int8, 0, total), parts)
	case []int16:
		out, ok = concatT(make([]int16, 0, total), parts)
	case []int32:
		out, ok = concatT(make([]int32, 0, total), parts)
	case []int64:
		out, ok = concatT(make([]int64, 0, total), parts)
	case []uint8:
		out, ok = concatT(make([]uint8, 0, total), parts)
	case []uint16:
		out, ok = concatT(make([]uint16, 0, total), parts)
	case []uint32:
		out, ok = concatT(make([]uint32, 0, total), parts)
	case []uint64:
		out, ok = concatT(make([]uint64, 0, total), parts)
	case []bool:
		out, ok = concatT(make([]bool, 0, total), parts)
	case []string:
		out, ok = concatT(make([]string, 0, total), parts)
	default:
		return nil, fmt.Errorf("batch: cannot merge tensor data of type %T", parts[0])
	}
	if !ok {
		return nil, fmt.Errorf("batch: tensors of one input have different Go types")
	}
	return out, nil
}

func sliceT[T any](d any, lo, hi int) (any, bool) {
	s, ok := d.([]T)
	if !ok || hi > len(s) {
		return nil, false
	}
	return s[lo:hi:hi], true
}

// sliceData returns elements [lo,hi) of a typed slice, sharing its memory.
func sliceData(d any, lo, hi int) (any, bool) {
	switch d.(type) {
	case []float32:
		return sliceT[float32](d, lo, hi)
	case []float64:
		return sliceT[float64](d, lo, hi)
	case []int8:
		return sliceT[int8](d, lo, hi)
	case []int16:
		return sliceT[int16](d, lo, hi)
	case []int32:
		return sliceT[int32](d, lo, hi)
	case []int64:
		return sliceT[int64](d, lo, hi)
	case []uint8:
		return sliceT[uint8](d, lo, hi)
	case []uint16:
		return sliceT[uint16](d, lo, hi)
	case []uint32:
		return sliceT[uint32](d, lo, hi)
	case []uint64:
		return sliceT[uint64](d, lo, hi)
	case []bool:
		return sliceT[bool](d, lo, hi)
	case []string:
		return sliceT[string](d, lo, hi)
	}
	return nil, false
}

// dataLen returns the number of elements of a typed slice, or -1.
func dataLen(d any) int {
	switch s := d.(type) {
	case []float32:
		return len(s)
	case []float64:
		return len(s)
	case []int8:
		return len(s)
	case []int16:
		return len(s)
	case []int32:
		return len(s)
	case []int64:
		return len(s)
	case []uint8:
		return len(s)
	case []uint16:
		return len(s)
	case []uint32:
		return len(s)
	case []uint64:
		return len(s)
	case []bool:
		return len(s)
	case []string:
		return len(s)
	}
	return -1
}
