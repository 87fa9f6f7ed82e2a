package oip

import (
	"encoding/json"
	"testing"

	"github.com/flywheel-ml/flywheel/server/tensor"
)

// BenchmarkDecode compares the fast path with the general decoder on the
// bench harness's mlp_small request (16 floats).
func BenchmarkDecode(b *testing.B) {
	body := []byte(`{"inputs":[{"name":"input","shape":[1,16],"datatype":"FP32","data":[-0.5,-0.3571429,-0.2142857,-0.07142857,0.07142857,0.2142857,0.3571429,-0.5,-0.3571429,-0.2142857,-0.07142857,0.07142857,0.2142857,0.3571429,-0.5,-0.3571429]}]}`)
	d := Decoder{Inputs: []tensor.Spec{{Name: "input", DataType: tensor.FP32, Shape: []int64{-1, 16}}},
		Outputs: []tensor.Spec{{Name: "probabilities", DataType: tensor.FP32, Shape: []int64{-1, 3}}}}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := d.Decode(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("general", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req InferenceRequest
			if err := json.Unmarshal(body, &req); err != nil {
				b.Fatal(err)
			}
			if _, err := d.check(&req, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
