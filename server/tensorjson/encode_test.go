package tensorjson

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/flywheel-ml/flywheel/server/tensor"
)

// Output encoding matches encoding/json byte for byte for finite values (so
// clients see the numbers they would from any Go server), and decodes back
// to the same values.
func TestAppendDataMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	f32 := []float32{0, 1, -1, 0.1, 1e-7, 1e21, 3.4028235e38, 1.4e-45, -0.0}
	f64 := []float64{0, 0.1, 1e-7, 1e21, 1e300, 5e-324, 123456789.125}
	for range 2000 {
		f32 = append(f32, math.Float32frombits(rng.Uint32()))
		f64 = append(f64, math.Float64frombits(rng.Uint64()))
	}
	f32 = finite(f32)
	f64 = finite(f64)
	strs := []string{"", "plain", "quote\" back\\slash", "ctl\x01\x1f\n\t\r", "é ü 日本", "bad\xffutf8", "\u2028\u2029", "<&>"}
	for _, tc := range []struct {
		dt   string
		data any
	}{
		{"FP32", f32}, {"FP64", f64},
		{"INT8", []int8{-128, 0, 127}}, {"INT16", []int16{-32768, 32767}}, {"INT32", []int32{math.MinInt32, math.MaxInt32}},
		{"INT64", []int64{math.MinInt64, math.MaxInt64}}, {"UINT8", []uint8{0, 255}}, {"UINT16", []uint16{0, 65535}},
		{"UINT32", []uint32{0, math.MaxUint32}}, {"UINT64", []uint64{0, math.MaxUint64}},
		{"BOOL", []bool{true, false}}, {"BYTES", strs},
	} {
		t.Run(tc.dt, func(t *testing.T) {
			got, err := AppendData(nil, tc.data)
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(tc.data)
			if err != nil {
				t.Fatal(err)
			}
			if tc.dt == "UINT8" {
				want = []byte("[0,255]") // encoding/json writes []byte as base64
			}
			if string(got) != string(want) {
				t.Fatalf("AppendData:\n got %.300s\nwant %.300s", got, want)
			}
			back, err := Decode(got, tc.dt, []int64{int64(tensor.Tensor{Data: tc.data}.Len())})
			if err != nil {
				t.Fatal(err)
			}
			if tc.dt != "BYTES" && !sameData(back, tc.data) {
				t.Fatalf("round trip changed values")
			}
		})
	}
}

func finite[T float32 | float64](s []T) []T {
	out := s[:0]
	for _, v := range s {
		if !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) {
			out = append(out, v)
		}
	}
	return out
}

func TestAppendTensor(t *testing.T) {
	got, err := AppendTensor(nil, "probabilities", "FP32", []int64{1, 3}, []float32{0.3695846, 0.3224185, 0.3079968})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"probabilities","datatype":"FP32","shape":[1,3],"data":[0.3695846,0.3224185,0.3079968]}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	got, _ = AppendTensor(nil, "h", "FP16", []int64{3}, []float32{1, float32(math.Inf(1)), float32(math.NaN())})
	if want := `{"name":"h","datatype":"FP16","shape":[3],"data":[1,null,null]}`; string(got) != want {
		t.Errorf("FP16: got %s, want %s", got, want)
	}
	if _, err := AppendData(nil, []complex64{1}); err == nil {
		t.Error("AppendData accepted []complex64")
	}
}
