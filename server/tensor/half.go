package tensor

import (
	"math"

	"github.com/x448/float16"
)

// FP16 and BF16 values travel as 2-byte values (ONNX Runtime tensors, binary
// tensor data) and live in memory widened to float32. These four functions
// are the only conversions.

// Float32ToHalf converts to IEEE 754 binary16 bits, rounding to nearest even
// (x448/float16, checked by its authors on every float32).
func Float32ToHalf(f float32) uint16 { return float16.Fromfloat32(f).Bits() }

// HalfToFloat32 converts IEEE 754 binary16 bits to float32 (exact).
func HalfToFloat32(h uint16) float32 { return float16.Frombits(h).Float32() }

// Float32ToBFloat16 converts to bfloat16 bits (the high half of float32),
// rounding to nearest even; NaN stays NaN.
func Float32ToBFloat16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// BFloat16ToFloat32 converts bfloat16 bits to float32 (exact).
func BFloat16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }
