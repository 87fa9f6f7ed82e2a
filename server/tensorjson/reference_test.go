package tensorjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/flywheel-ml/flywheel/server/tensor"
)

// refDecode is the specification of Decode written with encoding/json: it
// decodes data generically, checks the same nesting rules and converts each
// leaf with strconv. The fuzz test holds Decode to it.
func refDecode(data []byte, datatype string, shape []int64) (any, error) {
	n, ok := tensor.Elements(shape, math.MaxInt32)
	if !ok {
		return nil, errors.New("shape")
	}
	want := int(n)
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if len(bytes.Trim(data[dec.InputOffset():], " \t\n\r")) > 0 {
		return nil, errors.New("trailing content")
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, errors.New("not an array")
	}
	// nesting: per depth, every array has the same length; scalars sit at one
	// depth and no array is at or below it
	var (
		dims    []int
		leaf    = 0
		deepest = 0
		leaves  []any
	)
	var walk func(a []any, d int) error
	walk = func(a []any, d int) error {
		if d >= MaxDepth {
			return errors.New("too deep")
		}
		if len(dims) <= d {
			dims = append(dims, len(a))
		} else if dims[d] != len(a) {
			return errors.New("ragged")
		}
		for _, e := range a {
			if sub, ok := e.([]any); ok {
				if leaf != 0 && d+1 >= leaf {
					return errors.New("ragged")
				}
				deepest = max(deepest, d+1)
				if err := walk(sub, d+1); err != nil {
					return err
				}
				continue
			}
			if leaf == 0 {
				if deepest > d {
					return errors.New("ragged")
				}
				leaf = d + 1
			} else if leaf != d+1 {
				return errors.New("ragged")
			}
			leaves = append(leaves, e)
		}
		return nil
	}
	if err := walk(arr, 0); err != nil {
		return nil, err
	}
	if len(leaves) != want {
		return nil, errors.New("count")
	}
	levels := deepest + 1
	if levels > 1 && levels == len(shape) {
		for i := range levels {
			if int64(dims[i]) != shape[i] {
				return nil, errors.New("dims")
			}
		}
	}
	return refConvert(leaves, datatype)
}

func refFloat(e any, bits int) (float64, error) {
	if x, ok := e.(json.Number); ok {
		return strconv.ParseFloat(string(x), bits)
	}
	return 0, errors.New("not a number")
}

// refInt is the integer rule: a plain integer, or an integral number written
// as a float, in range.
func refInt(e any, bits int, unsigned bool) (int64, uint64, error) {
	n, ok := e.(json.Number)
	if !ok {
		return 0, 0, errors.New("not a number")
	}
	if unsigned {
		if v, err := strconv.ParseUint(string(n), 10, bits); err == nil {
			return 0, v, nil
		} else if errors.Is(err, strconv.ErrRange) {
			return 0, 0, err
		}
	} else if v, err := strconv.ParseInt(string(n), 10, bits); err == nil {
		return v, 0, nil
	} else if errors.Is(err, strconv.ErrRange) {
		return 0, 0, err
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || f != math.Trunc(f) {
		return 0, 0, errors.New("not an integer")
	}
	if unsigned {
		if f < 0 || f >= math.Ldexp(1, bits) {
			return 0, 0, errors.New("range")
		}
		return 0, uint64(f), nil
	}
	if f < -math.Ldexp(1, bits-1) || f >= math.Ldexp(1, bits-1) {
		return 0, 0, errors.New("range")
	}
	return int64(f), 0, nil
}

func refConvert(leaves []any, datatype string) (any, error) {
	bitsOf := map[string]int{"INT8": 8, "INT16": 16, "INT32": 32, "INT64": 64, "UINT8": 8, "UINT16": 16, "UINT32": 32, "UINT64": 64}
	var (
		f32 []float32
		f64 []float64
		i64 []int64
		u64 []uint64
		bs  []bool
		ss  []string
	)
	for _, e := range leaves {
		switch datatype {
		case "FP32", "BF16":
			f, err := refFloat(e, 32)
			if err != nil {
				return nil, err
			}
			f32 = append(f32, float32(f))
		case "FP64":
			f, err := refFloat(e, 64)
			if err != nil {
				return nil, err
			}
			f64 = append(f64, f)
		case "FP16":
			f, err := refFloat(e, 32)
			if err != nil {
				return nil, err
			}
			if math.Abs(f) > 65504 {
				return nil, errors.New("range")
			}
			f32 = append(f32, float32(f))
		case "INT8", "INT16", "INT32", "INT64":
			v, _, err := refInt(e, bitsOf[datatype], false)
			if err != nil {
				return nil, err
			}
			i64 = append(i64, v)
		case "UINT8", "UINT16", "UINT32", "UINT64":
			_, v, err := refInt(e, bitsOf[datatype], true)
			if err != nil {
				return nil, err
			}
			u64 = append(u64, v)
		case "BOOL":
			b, ok := e.(bool)
			if !ok {
				return nil, errors.New("not a bool")
			}
			bs = append(bs, b)
		case "BYTES":
			s, ok := e.(string)
			if !ok {
				return nil, errors.New("not a string")
			}
			ss = append(ss, s)
		default:
			return nil, fmt.Errorf("datatype %s", datatype)
		}
	}
	switch datatype {
	case "FP32", "FP16", "BF16":
		return orEmpty(f32), nil
	case "FP64":
		return orEmpty(f64), nil
	case "INT8":
		return conv[int8](i64), nil
	case "INT16":
		return conv[int16](i64), nil
	case "INT32":
		return conv[int32](i64), nil
	case "INT64":
		return orEmpty(i64), nil
	case "UINT8":
		return convU[uint8](u64), nil
	case "UINT16":
		return convU[uint16](u64), nil
	case "UINT32":
		return convU[uint32](u64), nil
	case "UINT64":
		return orEmpty(u64), nil
	case "BOOL":
		return orEmpty(bs), nil
	}
	return orEmpty(ss), nil
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func conv[T int8 | int16 | int32](s []int64) []T {
	out := make([]T, len(s))
	for i, v := range s {
		out[i] = T(v)
	}
	return out
}

func convU[T uint8 | uint16 | uint32](s []uint64) []T {
	out := make([]T, len(s))
	for i, v := range s {
		out[i] = T(v)
	}
	return out
}
