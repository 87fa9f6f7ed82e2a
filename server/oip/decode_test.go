package oip

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/flywheel-ml/flywheel/server/tensor"
)

var testSig = Decoder{
	Inputs: []tensor.Spec{
		{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 2}},
		{Name: "flag", DataType: tensor.Bool, Shape: []int64{-1}},
	},
	Outputs:     []tensor.Spec{{Name: "y", DataType: tensor.FP32, Shape: []int64{-1}}},
	MaxElements: 1 << 20,
}

func TestDecodeValid(t *testing.T) {
	cases := []struct {
		name string
		body string
		x    []float32
		flag []bool
		outs []string
	}{
		{"flat", `{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]},{"name":"flag","shape":[2],"datatype":"BOOL","data":[true,false]}]}`,
			[]float32{1, 2, 3, 4}, []bool{true, false}, nil},
		{"nested and reordered", `{"id":"7","parameters":{"date":"2026-01-01","k":1,"b":true},"inputs":[{"name":"flag","shape":[1],"datatype":"BOOL","data":[[false]]},{"name":"x","shape":[1,2],"datatype":"FP32","data":[[1.5, -2e-3]]}],"outputs":[{"name":"y"}]}`,
			[]float32{1.5, -2e-3}, []bool{false}, []string{"y"}},
		{"empty batch", `{"inputs":[{"name":"x","shape":[0,2],"datatype":"FP32","data":[]},{"name":"flag","shape":[0],"datatype":"BOOL","data":[]}]}`,
			[]float32{}, []bool{}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := testSig.Decode([]byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r.Inputs[0].Data, c.x) || !reflect.DeepEqual(r.Inputs[1].Data, c.flag) || !reflect.DeepEqual(r.Outputs, c.outs) {
				t.Fatalf("got %+v", r)
			}
		})
	}
}

func TestDecodeDatatypes(t *testing.T) {
	cases := []struct {
		dt   tensor.DataType
		data string
		want any
	}{
		{tensor.Int8, `[-128,127]`, []int8{-128, 127}},
		{tensor.Int16, `[-32768,32767]`, []int16{-32768, 32767}},
		{tensor.Int32, `[1,2.0]`, []int32{1, 2}},
		{tensor.Int64, `[9223372036854775807,-9223372036854775808]`, []int64{9223372036854775807, -9223372036854775808}},
		{tensor.Uint8, `[0,255]`, []uint8{0, 255}},
		{tensor.Uint16, `[0,65535]`, []uint16{0, 65535}},
		{tensor.Uint32, `[0,4294967295]`, []uint32{0, 4294967295}},
		{tensor.Uint64, `[0,18446744073709551615]`, []uint64{0, 18446744073709551615}},
		{tensor.FP16, `[0.5,-65504]`, []float32{0.5, -65504}},
		{tensor.BF16, `[1,2]`, []float32{1, 2}},
		{tensor.FP64, `[1e300,-0.25]`, []float64{1e300, -0.25}},
		{tensor.Bytes, `["a","\u00e9\n"]`, []string{"a", "é\n"}},
		{tensor.Bool, `[true,false]`, []bool{true, false}},
	}
	for _, c := range cases {
		t.Run(string(c.dt), func(t *testing.T) {
			d := Decoder{Inputs: []tensor.Spec{{Name: "v", DataType: c.dt, Shape: []int64{2}}}}
			r, err := d.Decode([]byte(`{"inputs":[{"name":"v","shape":[2],"datatype":"` + string(c.dt) + `","data":` + c.data + `}]}`))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r.Inputs[0].Data, c.want) {
				t.Fatalf("got %#v want %#v", r.Inputs[0].Data, c.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	x := func(shape, dt, data string) string {
		return `{"inputs":[{"name":"x","shape":` + shape + `,"datatype":"` + dt + `","data":` + data + `},{"name":"flag","shape":[1],"datatype":"BOOL","data":[true]}]}`
	}
	cases := []struct {
		name, body, want string
	}{
		{"not json", `{"inputs":`, "invalid JSON"},
		{"no inputs", `{"inputs":[]}`, "no inputs"},
		{"wrong field type", `{"inputs":[{"name":"x","shape":"2","datatype":"FP32","data":[1]}]}`, "shape"},
		{"unknown input", `{"inputs":[{"name":"z","shape":[1],"datatype":"FP32","data":[1]}]}`, `input "z": unknown input`},
		{"missing input", `{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`, `input "flag": missing`},
		{"duplicate", `{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]},{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`, "more than once"},
		{"wrong datatype", x(`[1,2]`, "FP64", `[1,2]`), "does not match the model's FP32"},
		{"unknown datatype", x(`[1,2]`, "FP8", `[1,2]`), `unknown datatype "FP8"`},
		{"rank", x(`[2]`, "FP32", `[1,2]`), "has 1 dimensions"},
		{"fixed dim", x(`[1,3]`, "FP32", `[1,2,3]`), "dimension 1"},
		{"negative dim", x(`[-1,2]`, "FP32", `[1,2]`), "negative"},
		{"huge dims", x(`[4611686018427387904,2]`, "FP32", `[1,2]`), "more than"},
		{"too few", x(`[2,2]`, "FP32", `[1,2,3]`), "data has 3 elements, shape [2,2] needs 4"},
		{"too many", x(`[1,2]`, "FP32", `[1,2,3]`), "data has 3 elements, shape [1,2] needs 2"},
		{"ragged", x(`[2,2]`, "FP32", `[[1,2],[3]]`), "ragged"},
		{"mixed", x(`[2,2]`, "FP32", `[[1,2],3,4]`), "ragged"},
		{"string value", x(`[1,2]`, "FP32", `[1,"2"]`), `element 1: "2" is a string`},
		{"null value", x(`[1,2]`, "FP32", `[1,null]`), "null is not a number"},
		{"bool for float", x(`[1,2]`, "FP32", `[true,1]`), "true is not a number"},
		{"fp32 overflow", x(`[1,2]`, "FP32", `[1e39,1]`), "out of range for FP32"},
		{"data not array", x(`[1,2]`, "FP32", `{"a":1}`), "must be a JSON array"},
		{"no data", `{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32"},{"name":"flag","shape":[1],"datatype":"BOOL","data":[true]}]}`, "data is missing"},
		{"no shape", `{"inputs":[{"name":"x","datatype":"FP32","data":[1,2]}]}`, "shape is missing"},
		{"no datatype", `{"inputs":[{"name":"x","shape":[1,2],"data":[1,2]}]}`, "datatype is missing"},
		{"no name", `{"inputs":[{"shape":[1,2],"datatype":"FP32","data":[1,2]}]}`, "no name"},
		{"bad bool", `{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]},{"name":"flag","shape":[1],"datatype":"BOOL","data":[1]}]}`, "not a BOOL"},
		{"unknown output", `{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]},{"name":"flag","shape":[1],"datatype":"BOOL","data":[true]}],"outputs":[{"name":"q"}]}`, `output "q": unknown output`},
		{"bad parameter", `{"parameters":{"a":[1]},"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`, "string, number or bool"},
		{"deep nesting", x(`[1,2]`, "FP32", strings.Repeat("[", 40)+"1"+strings.Repeat("]", 40)), "deeper"},
		{"nested shape mismatch", x(`[2,2]`, "FP32", `[[1,2,3,4]]`), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := testSig.Decode([]byte(c.body))
			var de *DecodeError
			if !errors.As(err, &de) {
				if c.want == "" && err == nil {
					return // accepted: element counts match
				}
				t.Fatalf("want a DecodeError, got %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
		})
	}
	intCases := []struct{ dt, data, want string }{
		{"INT8", `[128]`, "out of range for INT8"},
		{"UINT8", `[-1]`, "out of range for UINT8"},
		{"INT32", `[1.5]`, "not an integer"},
		{"UINT64", `[1e30]`, "out of range"},
		{"FP16", `[70000]`, "out of range for FP16"},
		{"BYTES", `[1]`, "must be JSON strings"},
	}
	for _, c := range intCases {
		d := Decoder{Inputs: []tensor.Spec{{Name: "v", DataType: tensor.DataType(c.dt), Shape: []int64{1}}}}
		_, err := d.Decode([]byte(`{"inputs":[{"name":"v","shape":[1],"datatype":"` + c.dt + `","data":` + c.data + `}]}`))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: got %v, want %q", c.dt, c.data, err, c.want)
		}
	}
}

func TestAppendResponse(t *testing.T) {
	b, err := AppendResponse(nil, Response{Model: "m", Version: "2", ID: "r<1>", Outputs: []tensor.Tensor{
		{Name: "y", DataType: tensor.FP32, Shape: []int64{3}, Data: []float32{0.1, float32(nanF()), 2}},
		{Name: "s", DataType: tensor.Bytes, Shape: []int64{1}, Data: []string{"a\"b"}},
		{Name: "p", DataType: tensor.Sequence, Shape: []int64{1}, Data: []any{map[string]any{"0": float32(0.5)}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"model_name":"m","model_version":"2","id":"r\u003c1\u003e","outputs":[{"name":"y","datatype":"FP32","shape":[3],"data":[0.1,null,2]},{"name":"s","datatype":"BYTES","shape":[1],"data":["a\"b"]},{"name":"p","datatype":"SEQUENCE","shape":[1],"data":[{"0":0.5}]}]}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
}

func nanF() float64 { var z float64; return z / z }
