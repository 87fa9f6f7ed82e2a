package tensorjson

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

var datatypes = []string{"FP16", "BF16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "BOOL", "BYTES"}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name, data, dt string
		shape          []int64
		want           any
		err            string // substring of the error; "" = success
	}{
		{"flat fp32", `[1, 2.5, -3e2, 0.1]`, "FP32", []int64{2, 2}, []float32{1, 2.5, -300, 0.1}, ""},
		{"nested fp32", ` [[1,2],[3,4]] `, "FP32", []int64{2, 2}, []float32{1, 2, 3, 4}, ""},
		{"nested 3d", `[[[1],[2]],[[3],[4]]]`, "INT32", []int64{2, 2, 1}, []int32{1, 2, 3, 4}, ""},
		{"fp64 precision", `[0.1, 1e308, 5e-324]`, "FP64", []int64{3}, []float64{0.1, 1e308, 5e-324}, ""},
		{"fp16 widened", `[1, 0.5, -2, 65504]`, "FP16", []int64{4}, []float32{1, 0.5, -2, 65504}, ""},
		{"bf16 widened", `[1e38, -0.5]`, "BF16", []int64{2}, []float32{1e38, -0.5}, ""},
		{"integral float for int", `[2.0, 1e3, -0.0]`, "INT16", []int64{3}, []int16{2, 1000, 0}, ""},
		{"integral float for uint", `[2.0, 1e3, -0]`, "UINT64", []int64{3}, []uint64{2, 1000, 0}, ""},
		{"int8 bounds", `[-128, 127]`, "INT8", []int64{2}, []int8{-128, 127}, ""},
		{"int64 bounds", `[-9223372036854775808, 9223372036854775807]`, "INT64", []int64{2}, []int64{math.MinInt64, math.MaxInt64}, ""},
		{"uint64 max", `[18446744073709551615, 0]`, "UINT64", []int64{2}, []uint64{math.MaxUint64, 0}, ""},
		{"bool", `[true,false]`, "BOOL", []int64{2}, []bool{true, false}, ""},
		{"bytes", `["a", "é\n", "\u00e9", ""]`, "BYTES", []int64{4}, []string{"a", "é\n", "é", ""}, ""},
		{"empty", `[]`, "FP32", []int64{0, 16}, []float32{}, ""},
		{"empty nested", `[[],[]]`, "FP32", []int64{2, 0}, []float32{}, ""},
		{"empty nested shallower than the rank", `[[]]`, "FP32", []int64{1, 0, 5}, []float32{}, ""},
		{"empty nested against shape", `[[ ]]`, "FP32", []int64{0, 2}, nil, "nested data has shape [1,0], shape is [0,2]"},
		{"empty nested deeper than the rank", `[[]]`, "FP32", []int64{0}, []float32{}, ""},
		{"scalar shape", `[7]`, "INT64", []int64{}, []int64{7}, ""},

		{"count short", `[1,2,3]`, "FP32", []int64{2, 2}, nil, "data has 3 elements, shape [2,2] needs 4"},
		{"count long", `[1,2,3,4,5]`, "FP32", []int64{2, 2}, nil, "data has 5 elements"},
		{"ragged", `[[1,2],[3]]`, "FP32", []int64{3}, nil, "ragged"},
		{"ragged depth", `[[1,2],3]`, "FP32", []int64{3}, nil, "ragged"},
		{"ragged depth 2", `[1,[2,3]]`, "FP32", []int64{3}, nil, "ragged"},
		{"empty then value", `[[],1]`, "FP32", []int64{1}, nil, "ragged"},
		{"nesting vs shape", `[[1,2,3],[4,5,6]]`, "FP32", []int64{3, 2}, nil, "nested data has shape [2,3], shape is [3,2]"},
		{"nesting deeper than the rank reads flat", `[[1,2],[3,4]]`, "FP32", []int64{4}, []float32{1, 2, 3, 4}, ""},
		{"nesting shallower than the rank reads flat", `[[1,2,3,4]]`, "FP32", []int64{2, 1, 2}, []float32{1, 2, 3, 4}, ""},
		{"string for fp32", `["1"]`, "FP32", []int64{1}, nil, `data element 0: "1" is a string, FP32 needs a number`},
		{"null", `[1,null]`, "FP32", []int64{2}, nil, "data element 1: null is not a number (at byte 3)"},
		{"object", `[{}]`, "FP32", []int64{1}, nil, "object"},
		{"fp32 overflow", `[1e39]`, "FP32", []int64{1}, nil, "1e39 is out of range for FP32"},
		{"fp16 overflow", `[65505]`, "FP16", []int64{1}, nil, "65505 is out of range for FP16"},
		{"non-finite string", `["NaN"]`, "FP64", []int64{1}, nil, "is a string, FP64 needs a number"},
		{"int from float out of range", `[1e3]`, "INT8", []int64{1}, nil, "1e3 is out of range for INT8"},
		{"int8 overflow", `[128]`, "INT8", []int64{1}, nil, "128 is out of range for INT8"},
		{"uint negative", `[-1]`, "UINT8", []int64{1}, nil, "-1 is out of range for UINT8"},
		{"int fraction", `[1.5]`, "INT32", []int64{1}, nil, "1.5 is not an integer, INT32 needs one"},
		{"int exponent fraction", `[1.5e0]`, "INT64", []int64{1}, nil, "not an integer"},
		{"bool as number", `[1]`, "BOOL", []int64{1}, nil, "1 is not a BOOL (true or false)"},
		{"bytes as number", `[1]`, "BYTES", []int64{1}, nil, "BYTES elements must be JSON strings, got 1"},
		{"leading zero", `[01]`, "INT32", []int64{1}, nil, "want ',' or ']'"},
		{"bare dot", `[1.]`, "FP32", []int64{1}, nil, "malformed number"},
		{"plus sign", `[+1]`, "FP32", []int64{1}, nil, "unexpected character"},
		{"hex", `[0x10]`, "INT32", []int64{1}, nil, "want ',' or ']'"},
		{"NaN bare", `[NaN]`, "FP32", []int64{1}, nil, "unexpected character"},
		{"trailing comma", `[1,]`, "FP32", []int64{1}, nil, "unexpected character"},
		{"unterminated", `[1,2`, "FP32", []int64{2}, nil, "not closed"},
		{"not array", `1`, "FP32", []int64{1}, nil, "must be a JSON array"},
		{"trailing content", `[1] x`, "FP32", []int64{1}, nil, "after the data array"},
		{"negative dim", `[]`, "FP32", []int64{-1}, nil, "negative dimension"},
		{"huge shape", `[]`, "FP32", []int64{1 << 40, 1 << 40}, nil, "more than 2147483647 elements"},
		{"too deep", strings.Repeat("[", 40) + strings.Repeat("]", 40), "FP32", []int64{0}, nil, "nested deeper than 32 levels"},
		{"control char", "[\"a\x01\"]", "BYTES", []int64{1}, nil, "unescaped control character"},
		{"bad escape", `["\x"]`, "BYTES", []int64{1}, nil, "bad escape"},
		{"unknown datatype", `[1]`, "FP8", []int64{1}, nil, "unknown datatype"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode([]byte(tc.data), tc.dt, tc.shape)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !sameData(got, tc.want) {
				t.Fatalf("got %#v, want %#v", got, tc.want)
			}
		})
	}
	_, err := Decode([]byte(`[1]`), "FP8", []int64{1})
	if !errors.Is(err, ErrUnknownDatatype) {
		t.Errorf("unknown datatype error %v does not wrap ErrUnknownDatatype", err)
	}
}

// sameData compares typed slices, NaN equal to NaN.
func sameData(a, b any) bool {
	if fa, ok := a.([]float64); ok {
		fb, ok := b.([]float64)
		if !ok || len(fa) != len(fb) {
			return false
		}
		for i := range fa {
			if fa[i] != fb[i] && !(math.IsNaN(fa[i]) && math.IsNaN(fb[i])) {
				return false
			}
		}
		return true
	}
	if fa, ok := a.([]float32); ok {
		fb, ok := b.([]float32)
		if !ok || len(fa) != len(fb) {
			return false
		}
		for i := range fa {
			if fa[i] != fb[i] && !(fa[i] != fa[i] && fb[i] != fb[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

func TestDecodeFloat32Reuses(t *testing.T) {
	buf := make([]float32, 0, 64)
	out, err := DecodeFloat32(buf, []byte(`[1,2,3]`), []int64{1, 3})
	if err != nil {
		t.Fatal(err)
	}
	if &out[0] != &buf[:1][0] {
		t.Error("DecodeFloat32 did not reuse dst")
	}
	data, shape := []byte(`[[0.5,-1.25,3e-3,4]]`), []int64{1, 4}
	if allocs := testing.AllocsPerRun(100, func() {
		if _, err := DecodeFloat32(buf, data, shape); err != nil {
			t.Fatal(err)
		}
	}); allocs > 0 {
		t.Errorf("DecodeFloat32 into a large enough buffer: %v allocations, want none", allocs)
	}
}

// FuzzDecode holds the scanner to refDecode (encoding/json + strconv) for
// every datatype: both accept or both reject, and accepted values are equal.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`[1,2,3,4]`, `[[1,2],[3,4]]`, `[[[1]],[[2]]]`, `[1.5e3,-0.25]`, `["NaN",1]`, `[true,false]`, `[2.0,-0.0,1e2,65504.5]`,
		`["a","b\u00e9"]`, `[-0, 255]`, `[[],[]]`, `[1,[2]]`, `[18446744073709551615]`, `[1e400]`, "[\"\xff\"]", ` [ 1 , 2 ] `} {
		for i := range datatypes {
			f.Add([]byte(s), uint8(i), uint8(2), uint8(2))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, dti, d0, d1 uint8) {
		dt := datatypes[int(dti)%len(datatypes)]
		shapes := [][]int64{{int64(d0)}, {int64(d0), int64(d1)}, {int64(d0) * int64(d1)}}
		for _, shape := range shapes {
			got, err := Decode(data, dt, shape)
			want, refErr := refDecode(data, dt, shape)
			if (err == nil) != (refErr == nil) {
				t.Fatalf("%s %v %q: Decode err %v, reference err %v", dt, shape, data, err, refErr)
			}
			if err == nil && !sameData(got, want) {
				t.Fatalf("%s %v %q: Decode %#v, reference %#v", dt, shape, data, got, want)
			}
		}
	})
}

func ExampleDecode() {
	v, err := Decode([]byte(`[[0.5, 1], [2, 4]]`), "FP32", []int64{2, 2})
	fmt.Println(v, err)
	// Output: [0.5 1 2 4] <nil>
}

// The fast path must give exactly strconv's answer.
func TestFastFloatMatchesStrconv(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	toks := []string{"0", "-0", "0.0", "1", "-1.5", "0.2142857", "16777215", "16777216", "16777217", "0.1e1", "1e10", "1e-10",
		"123456789012345678", "9007199254740993", "1.7976931348623157e308", "4.9e-324", "0.000001", "1E+2", "00"[:1]}
	for range 20000 {
		// random decimals with up to 12 digits and small exponents
		m := rng.Uint64N(1_000_000_000_000)
		s := strconv.FormatUint(m, 10)
		if k := rng.IntN(len(s) + 1); k < len(s) {
			s = s[:k] + "." + s[k:]
			if k == 0 {
				s = "0" + s
			}
		}
		if rng.IntN(3) == 0 {
			s += "e" + strconv.Itoa(rng.IntN(40)-20)
		}
		toks = append(toks, s)
	}
	for _, tok := range toks {
		if f, ok := fastF32([]byte(tok)); ok {
			want, _ := strconv.ParseFloat(tok, 32)
			if f != float32(want) {
				t.Fatalf("fastF32(%s) = %v, strconv %v", tok, f, float32(want))
			}
		}
		if f, ok := fastF64([]byte(tok)); ok {
			want, _ := strconv.ParseFloat(tok, 64)
			if f != want {
				t.Fatalf("fastF64(%s) = %v, strconv %v", tok, f, want)
			}
		}
	}
}
