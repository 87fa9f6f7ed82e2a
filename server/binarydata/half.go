package binarydata

import "math"

// FP16 and BF16 travel as 2-byte values and live in memory widened to
// float32, as in server/tensor.

// halfBits converts f to IEEE 754 binary16 bits, rounding to nearest even.
func halfBits(f32 float32) uint16 {
	f := float64(f32)
	var sign uint16
	if math.Signbit(f) {
		sign = 0x8000
	}
	if math.IsNaN(f) {
		return sign | 0x7e00
	}
	a := math.Abs(f)
	if math.IsInf(f, 0) || a >= 65520 { // 65520 and above round to infinity
		return sign | 0x7c00
	}
	frac, exp := math.Frexp(a) // a = frac * 2^exp, frac in [0.5, 1)
	e := exp - 1
	if a == 0 || e < -25 {
		return sign
	}
	var m float64
	he := 0
	if e < -14 { // subnormal: a = m * 2^-24
		m = a * (1 << 24)
	} else {
		m = (2*frac - 1) * 1024
		he = e + 15
	}
	r := math.RoundToEven(m)
	if he == 0 {
		return sign | uint16(r) // r == 1024 carries into the smallest normal
	}
	if r >= 1024 {
		r = 0
		he++
	}
	if he >= 31 {
		return sign | 0x7c00
	}
	return sign | uint16(he)<<10 | uint16(r)
}

// halfValue converts binary16 bits to float32 (exact).
func halfValue(h uint16) float32 {
	sign := float32(1)
	if h&0x8000 != 0 {
		sign = -1
	}
	e := int(h>>10) & 0x1f
	m := float32(h & 0x3ff)
	switch e {
	case 0:
		return sign * m * 0x1p-24
	case 31:
		if m != 0 {
			return float32(math.NaN())
		}
		return sign * float32(math.Inf(1))
	}
	return sign * (1 + m/1024) * float32(math.Ldexp(1, e-15))
}

// bf16Bits converts f to bfloat16 bits (the high half of float32), rounding
// to nearest even; NaN stays NaN.
func bf16Bits(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

func bf16Value(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }
