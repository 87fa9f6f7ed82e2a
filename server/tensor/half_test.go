package tensor

import (
	"math"
	"testing"
)

func TestHalfRoundTrip(t *testing.T) {
	cases := []struct {
		in   float32
		bits uint16
	}{
		{0, 0x0000}, {1, 0x3c00}, {-2, 0xc000}, {0.5, 0x3800}, {65504, 0x7bff},
		{float32(math.Inf(1)), 0x7c00}, {6.103515625e-05, 0x0400}, {5.960464477539063e-08, 0x0001},
		{1e6, 0x7c00}, {0.333251953125, 0x3555},
	}
	for _, c := range cases {
		if got := Float32ToHalf(c.in); got != c.bits {
			t.Errorf("Float32ToHalf(%v) = %#04x, want %#04x", c.in, got, c.bits)
		}
		if c.in != 1e6 {
			if back := HalfToFloat32(c.bits); back != c.in {
				t.Errorf("HalfToFloat32(%#04x) = %v, want %v", c.bits, back, c.in)
			}
		}
	}
	for h := 0; h < 0x10000; h++ {
		f := HalfToFloat32(uint16(h))
		if f != f {
			continue
		}
		if got := Float32ToHalf(f); got != uint16(h) {
			t.Fatalf("round trip of %#04x gave %#04x", h, got)
		}
	}
}

func TestBFloat16(t *testing.T) {
	for _, f := range []float32{0, 1, -3.5, 1024, 0.15625} {
		if got := BFloat16ToFloat32(Float32ToBFloat16(f)); got != f {
			t.Errorf("bf16 round trip of %v = %v", f, got)
		}
	}
}

func TestElements(t *testing.T) {
	cases := []struct {
		shape []int64
		want  int64
		ok    bool
	}{
		{[]int64{2, 3}, 6, true}, {[]int64{}, 1, true}, {[]int64{4, 0, 9}, 0, true},
		{[]int64{-1, 2}, 0, false}, {[]int64{1 << 40, 1 << 40}, 0, false}, {[]int64{1000, 1000}, 0, false},
	}
	for _, c := range cases {
		n, ok := Elements(c.shape, 1<<16)
		if n != c.want || ok != c.ok {
			t.Errorf("Elements(%v) = %d,%v want %d,%v", c.shape, n, ok, c.want, c.ok)
		}
	}
}

func TestHalfConversionsEdges(t *testing.T) {
	for _, tc := range []struct {
		f    float32
		bits uint16
	}{
		{0, 0}, {float32(math.Copysign(0, -1)), 0x8000}, {1, 0x3c00}, {-2, 0xc000}, {65504, 0x7bff},
		{0x1p-24, 0x0001}, {0x1p-14, 0x0400}, {0.333251953125, 0x3555}, {1.0009765625, 0x3c01},
		{1.00048828125, 0x3c00} /* tie to even */, {1.00146484375, 0x3c02} /* tie to even up */, {0x1p-26, 0},
		{float32(math.Inf(1)), 0x7c00}, {65520, 0x7c00}, {65519, 0x7bff},
	} {
		if got := Float32ToHalf(tc.f); got != tc.bits {
			t.Errorf("Float32ToHalf(%v) = %#04x, want %#04x", tc.f, got, tc.bits)
		}
	}
	for h := range 1 << 16 { // every half and every bfloat16 survives a round trip
		if v := HalfToFloat32(uint16(h)); v == v {
			if got := Float32ToHalf(v); got != uint16(h) {
				t.Fatalf("Float32ToHalf(HalfToFloat32(%#04x)=%v) = %#04x", h, v, got)
			}
		}
		if v := BFloat16ToFloat32(uint16(h)); v == v {
			if got := Float32ToBFloat16(v); got != uint16(h) {
				t.Fatalf("Float32ToBFloat16(BFloat16ToFloat32(%#04x)=%v) = %#04x", h, v, got)
			}
		}
	}
	if got := Float32ToBFloat16(1.00390625); got != 0x3f80 { // 1 + 2^-8: tie, rounds to even (1.0)
		t.Errorf("bf16Bits tie = %#04x", got)
	}
}
