package predlog

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
)

// Feature and output values are stored packed, not as JSON text: encoding
// 256 floats as JSON and inserting the text cost the 256-feature benchmark
// model a third of the server's CPU under load. A packed value column is one
// byte giving the element size (4: IEEE-754 float32, 8: float64), then the
// values, little-endian. FP32 tensors are stored as float32, as served.
const (
	packed32 = 4
	packed64 = 8
)

// values is a row's feature or output values: float32 when the tensor was
// FP32 (a view of the served tensor, no copy), float64 otherwise.
type values struct {
	f32 []float32
	f64 []float64
}

func (v values) len() int { return len(v.f32) + len(v.f64) }

// at returns value i widened to float64; a float32 becomes the float64 of
// its shortest decimal form, so 1.37f reads back as 1.37, as in the JSON the
// API returns.
func (v values) at(i int) float64 {
	if v.f32 != nil {
		return widen(v.f32[i])
	}
	return v.f64[i]
}

func (v values) slice(from, to int) values {
	if v.f32 != nil {
		return values{f32: v.f32[from:to]}
	}
	return values{f64: v.f64[from:to]}
}

// appendPacked appends v in the packed form to dst (nothing when v is empty).
func appendPacked(dst []byte, v values) []byte {
	switch {
	case len(v.f32) > 0:
		dst = append(dst, packed32)
		for _, x := range v.f32 {
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(x))
		}
	case len(v.f64) > 0:
		dst = append(dst, packed64)
		for _, x := range v.f64 {
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(x))
		}
	}
	return dst
}

// unpack decodes a packed value column into float64s (NaN and ±Inf as 0,
// as the JSON columns stored them).
func unpack(b []byte) ([]float64, error) {
	if len(b) == 0 {
		return nil, nil
	}
	size, b := int(b[0]), b[1:]
	if (size != packed32 && size != packed64) || len(b)%size != 0 {
		return nil, fmt.Errorf("packed values: element size %d with %d bytes", size, len(b))
	}
	out := make([]float64, len(b)/size)
	for i := range out {
		if size == packed32 {
			out[i] = widen(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
		} else {
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		}
		out[i] = finite(out[i])
	}
	return out, nil
}

// widen converts f to the float64 nearest its shortest decimal form.
func widen(f float32) float64 {
	d, _ := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'g', -1, 32), 64)
	return d
}
