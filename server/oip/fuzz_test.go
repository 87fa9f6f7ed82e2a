package oip

import (
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"testing"

	"github.com/flywheel-ml/flywheel/server/tensor"
)

// FuzzDecode feeds arbitrary bodies to the decoder for a model with inputs
// of several datatypes: it must never panic, every failure must be a
// *DecodeError, and every success must fill the model's shapes.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`))
	d := fuzzDecoder()
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := d.Decode(body)
		checkDecoded(t, d, r, err)
	})
}

// fuzzDecoder is the decoder the fuzz targets feed: inputs of three
// datatypes, at most 1<<16 elements.
func fuzzDecoder() Decoder {
	return Decoder{
		Inputs: []tensor.Spec{
			{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 2}},
			{Name: "s", DataType: tensor.Bytes, Shape: []int64{-1}},
			{Name: "i", DataType: tensor.Int8, Shape: []int64{-1}},
		},
		Outputs:     []tensor.Spec{{Name: "y", DataType: tensor.FP32, Shape: []int64{-1}}},
		MaxElements: 1 << 16,
	}
}

// checkDecoded fails t unless err is a *DecodeError or r fills d's inputs:
// each input of its declared datatype, with as many elements as its shape.
func checkDecoded(t *testing.T, d Decoder, r *Request, err error) {
	t.Helper()
	if err != nil {
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("error %v (%T) is not a DecodeError", err, err)
		}
		return
	}
	for i, in := range r.Inputs {
		n, ok := tensor.Elements(in.Shape, d.MaxElements)
		if !ok || int64(in.Len()) != n || in.DataType != d.Inputs[i].DataType {
			t.Fatalf("input %d: %s with %d elements for shape %v", i, in.DataType, in.Len(), in.Shape)
		}
	}
}

// FuzzDecodeFast holds the fast path to the general decoder: whatever the
// fast path accepts, the general decoder accepts with the same result.
func FuzzDecodeFast(f *testing.F) {
	for _, b := range []string{
		`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`,
		`{"id":"a","parameters":{"date":"2026-01-02","n":1.5,"b":true},"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2e3],[-0.5,0]]}],"outputs":[{"name":"y"}]}`,
		` { "inputs" : [ { "datatype" : "FP64" , "data" : [ 1 , 2 ] , "shape" : [ 1 , 2 ] , "name" : "d" } ] } `,
		`{"inputs":[{"name":"x","shape":[0,2],"datatype":"FP32","data":[]}],"outputs":[]}`,
		`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}],"parameters":{}}`,
		`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,"]"]}]}`,
	} {
		f.Add([]byte(b))
	}
	d := Decoder{
		Inputs: []tensor.Spec{
			{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 2}},
			{Name: "d", DataType: tensor.FP64, Shape: nil},
		},
		Outputs:     []tensor.Spec{{Name: "y", DataType: tensor.FP32, Shape: []int64{-1}}},
		MaxElements: 1 << 16,
	}
	d1 := Decoder{Inputs: d.Inputs[:1], Outputs: d.Outputs, MaxElements: d.MaxElements}
	d2 := Decoder{Inputs: d.Inputs[1:], Outputs: d.Outputs, MaxElements: d.MaxElements}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, dec := range []Decoder{d, d1, d2} {
			fast, err := dec.decodeFast(body)
			if err != nil {
				continue
			}
			var req InferenceRequest
			if err := json.Unmarshal(body, &req); err != nil {
				t.Fatalf("fast path accepted what encoding/json rejects (%v): %q", err, body)
			}
			slow, err := dec.check(&req, nil)
			if err != nil {
				t.Fatalf("fast path accepted what the general decoder rejects (%v): %q", err, body)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Fatalf("fast %+v\nslow %+v\nbody %q", fast, slow, body)
			}
		}
	})
}

// TestDecodeFastPathTaken checks that the common request shapes do take the
// fast path (a refactor that silently sent everything to encoding/json
// would pass every other test).
func TestDecodeFastPathTaken(t *testing.T) {
	for _, b := range []string{
		`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`,
		`{"id":"replay-2016-01-01","parameters":{"date":"2016-01-01"},"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}],"outputs":[{"name":"y"}]}`,
	} {
		d := Decoder{Inputs: []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 2}}},
			Outputs: []tensor.Spec{{Name: "y", DataType: tensor.FP32, Shape: []int64{-1}}}}
		if _, err := d.decodeFast([]byte(b)); err != nil {
			t.Errorf("%s: %v", b, err)
		}
	}
}

// FuzzDecodeBinary feeds arbitrary bodies and header lengths to the binary
// tensor data decoder: it must never panic, every failure must be a
// *DecodeError, and every success must fill the model's shapes.
func FuzzDecodeBinary(f *testing.F) {
	head := `{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}},{"name":"s","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}},{"name":"i","shape":[2],"datatype":"INT8","data":[1,2]}]}`
	f.Add(append([]byte(head), 0, 0, 128, 63, 0, 0, 0, 64, 2, 0, 0, 0, 'h', 'i'), len(head))
	f.Add([]byte(`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`), 70)
	d := fuzzDecoder()
	f.Fuzz(func(t *testing.T, body []byte, headerLength int) {
		r, err := d.DecodeBinary(body, strconv.Itoa(headerLength))
		checkDecoded(t, d, r, err)
	})
}

// TestDecodeFastPathEveryDatatype checks that the fast path decodes every
// datatype's data with the one decoder (it took only FP32 and FP64 before).
func TestDecodeFastPathEveryDatatype(t *testing.T) {
	for _, c := range []struct {
		dt   tensor.DataType
		data string
	}{
		{tensor.FP16, `[1.5,2]`}, {tensor.Int64, `[1,-2]`}, {tensor.Uint8, `[0,255]`}, {tensor.Bool, `[true,false]`}, {tensor.Bytes, `["a","b"]`},
	} {
		d := Decoder{Inputs: []tensor.Spec{{Name: "x", DataType: c.dt, Shape: []int64{-1, 2}}}}
		body := `{"inputs":[{"name":"x","shape":[1,2],"datatype":"` + string(c.dt) + `","data":` + c.data + `}]}`
		fast, err := d.decodeFast([]byte(body))
		if err != nil {
			t.Errorf("%s: fast path not taken: %v", c.dt, err)
			continue
		}
		slow, err := d.Decode([]byte(body))
		if err != nil || !reflect.DeepEqual(fast, slow) {
			t.Errorf("%s: fast %+v, Decode %+v (%v)", c.dt, fast, slow, err)
		}
	}
}
