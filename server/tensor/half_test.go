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
