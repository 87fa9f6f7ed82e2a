package oip

import (
	"errors"
	"testing"

	"github.com/flywheel-ml/flywheel/server/tensor"
)

// FuzzDecode feeds arbitrary bodies to the decoder for a model with inputs
// of several datatypes: it must never panic, every failure must be a
// *DecodeError, and every success must fill the model's shapes.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`))
	d := Decoder{
		Inputs: []tensor.Spec{
			{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 2}},
			{Name: "s", DataType: tensor.Bytes, Shape: []int64{-1}},
			{Name: "i", DataType: tensor.Int8, Shape: []int64{-1}},
		},
		Outputs:     []tensor.Spec{{Name: "y", DataType: tensor.FP32, Shape: []int64{-1}}},
		MaxElements: 1 << 16,
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := d.Decode(body)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v (%T) is not a DecodeError", err, err)
			}
			return
		}
		for i, in := range r.Inputs {
			n, ok := tensor.Elements(in.Shape, 1<<16)
			if !ok || int64(in.Len()) != n {
				t.Fatalf("input %d: %d elements for shape %v", i, in.Len(), in.Shape)
			}
			if in.DataType != d.Inputs[i].DataType {
				t.Fatalf("input %d datatype %s", i, in.DataType)
			}
		}
	})
}
