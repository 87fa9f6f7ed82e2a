package oip

import (
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/flywheel-ml/flywheel/server/binarydata"
	"github.com/flywheel-ml/flywheel/server/tensor"
)

func f32Bytes(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// binBody returns the JSON header followed by the blocks, and the header's
// length as the Inference-Header-Content-Length value.
func binBody(header string, blocks ...[]byte) ([]byte, string) {
	b := []byte(header)
	for _, blk := range blocks {
		b = append(b, blk...)
	}
	return b, strconv.Itoa(len(header))
}

func TestDecodeBinary(t *testing.T) {
	cases := []struct {
		name   string
		header string
		blocks [][]byte
		x      []float32
		flag   []bool
	}{
		{"all binary", `{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","parameters":{"binary_data_size":16}},{"name":"flag","shape":[2],"datatype":"BOOL","parameters":{"binary_data_size":2}}]}`,
			[][]byte{f32Bytes(1, 2, 3, -4.5), {1, 0}}, []float32{1, 2, 3, -4.5}, []bool{true, false}},
		{"blocks in request order", `{"inputs":[{"name":"flag","shape":[1],"datatype":"BOOL","parameters":{"binary_data_size":1}},{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}`,
			[][]byte{{1}, f32Bytes(0.25, 8)}, []float32{0.25, 8}, []bool{true}},
		{"mixed JSON and binary", `{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[5,6]},{"name":"flag","shape":[3],"datatype":"BOOL","parameters":{"binary_data_size":3}}]}`,
			[][]byte{{0, 1, 1}}, []float32{5, 6}, []bool{false, true, true}},
		{"no binary input", `{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[5,6]},{"name":"flag","shape":[1],"datatype":"BOOL","data":[true]}]}`,
			nil, []float32{5, 6}, []bool{true}},
		{"empty batch", `{"inputs":[{"name":"x","shape":[0,2],"datatype":"FP32","parameters":{"binary_data_size":0}},{"name":"flag","shape":[0],"datatype":"BOOL","parameters":{"binary_data_size":0}}]}`,
			nil, []float32{}, []bool{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body, hl := binBody(c.header, c.blocks...)
			r, err := testSig.DecodeBinary(body, hl)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r.Inputs[0].Data, c.x) || !reflect.DeepEqual(r.Inputs[1].Data, c.flag) {
				t.Fatalf("got %+v", r.Inputs)
			}
			for i := range body { // the tensors must not alias the request buffer
				body[i] = 0xff
			}
			if !reflect.DeepEqual(r.Inputs[0].Data, c.x) || !reflect.DeepEqual(r.Inputs[1].Data, c.flag) {
				t.Fatalf("tensors changed with the body: %+v", r.Inputs)
			}
		})
	}
}

// TestDecodeBinaryMatchesJSON decodes the same tensors of every datatype
// sent as JSON and as binary data: the results must be equal.
func TestDecodeBinaryMatchesJSON(t *testing.T) {
	cases := []struct {
		dt   tensor.DataType
		json string
		data any
	}{
		{tensor.Int8, `[-128,127]`, []int8{-128, 127}},
		{tensor.Int16, `[-32768,32767]`, []int16{-32768, 32767}},
		{tensor.Int32, `[1,-2]`, []int32{1, -2}},
		{tensor.Int64, `[9223372036854775807,-9223372036854775808]`, []int64{math.MaxInt64, math.MinInt64}},
		{tensor.Uint8, `[0,255]`, []uint8{0, 255}},
		{tensor.Uint16, `[0,65535]`, []uint16{0, 65535}},
		{tensor.Uint32, `[0,4294967295]`, []uint32{0, math.MaxUint32}},
		{tensor.Uint64, `[0,18446744073709551615]`, []uint64{0, math.MaxUint64}},
		{tensor.FP16, `[0.5,-2]`, []float32{0.5, -2}},
		{tensor.BF16, `[0.5,-2]`, []float32{0.5, -2}},
		{tensor.FP32, `[0.1,-2]`, []float32{0.1, -2}},
		{tensor.FP64, `[0.1,-2]`, []float64{0.1, -2}},
		{tensor.Bool, `[true,false]`, []bool{true, false}},
		{tensor.Bytes, `["a","\u00e9t\u00e9"]`, []string{"a", "été"}},
	}
	for _, c := range cases {
		t.Run(string(c.dt), func(t *testing.T) {
			d := Decoder{Inputs: []tensor.Spec{{Name: "v", DataType: c.dt, Shape: []int64{-1}}}}
			fromJSON, err := d.Decode([]byte(`{"inputs":[{"name":"v","shape":[2],"datatype":"` + string(c.dt) + `","data":` + c.json + `}]}`))
			if err != nil {
				t.Fatal(err)
			}
			blk, err := binarydata.Append(nil, string(c.dt), c.data)
			if err != nil {
				t.Fatal(err)
			}
			body, hl := binBody(`{"inputs":[{"name":"v","shape":[2],"datatype":"`+string(c.dt)+`","parameters":{"binary_data_size":`+strconv.Itoa(len(blk))+`}}]}`, blk)
			fromBin, err := d.DecodeBinary(body, hl)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(fromJSON.Inputs, fromBin.Inputs) {
				t.Fatalf("JSON %+v\nbinary %+v", fromJSON.Inputs, fromBin.Inputs)
			}
		})
	}
}

func TestDecodeBinaryErrors(t *testing.T) {
	const x8 = `{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}}`
	const flagJSON = `{"name":"flag","shape":[1],"datatype":"BOOL","data":[true]}`
	req := func(inputs ...string) string { return `{"inputs":[` + strings.Join(inputs, ",") + `]}` }
	good := req(x8, flagJSON)
	cases := []struct {
		name   string
		body   []byte
		header string
		input  string // the input the error must name, if any
		want   string
	}{
		{"header not a number", append([]byte(good), f32Bytes(1, 2)...), "12a", "", `Inference-Header-Content-Length "12a" is not a byte count`},
		{"negative header", append([]byte(good), f32Bytes(1, 2)...), "-1", "", "is not a byte count"},
		{"header beyond body", []byte(good), strconv.Itoa(len(good) + 1), "", "exceeds the body length"},
		{"header cuts the JSON", append([]byte(good), f32Bytes(1, 2)...), strconv.Itoa(len(good) - 1), "", "invalid JSON inference header"},
		{"block shorter than shape", append([]byte(req(`{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":4}}`, flagJSON)), f32Bytes(1)...), "", "x",
			"binary_data_size 4 does not match shape [1,2]: 2 FP32 elements are 8 bytes"},
		{"block missing", []byte(good), "", "x", "binary_data_size 8 exceeds the 0 bytes left"},
		{"leftover bytes", append([]byte(good), f32Bytes(1, 2, 3)...), "", "", "4 bytes after the JSON header belong to no input"},
		{"data and binary", append([]byte(req(`{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2],"parameters":{"binary_data_size":8}}`, flagJSON)), f32Bytes(1, 2)...), "", "x",
			"both data and parameter binary_data_size"},
		{"size not integral", []byte(req(`{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":7.5}}`, flagJSON)), "", "x", "binary_data_size 7.5 is not a byte count"},
		{"size a string", []byte(req(`{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":"8"}}`, flagJSON)), "", "x", "binary_data_size must be a number of bytes"},
		{"bad BOOL byte", append([]byte(req(x8, `{"name":"flag","shape":[1],"datatype":"BOOL","parameters":{"binary_data_size":1}}`)), append(f32Bytes(1, 2), 7)...), "", "flag",
			"BOOL byte 0 is 7"},
		{"datatype still checked", append([]byte(req(`{"name":"x","shape":[1,1],"datatype":"FP64","parameters":{"binary_data_size":8}}`, flagJSON)), f32Bytes(1, 2)...), "", "x",
			"FP64 does not match the model's FP32"},
		{"shape still checked", append([]byte(req(`{"name":"x","shape":[2,1],"datatype":"FP32","parameters":{"binary_data_size":8}}`, flagJSON)), f32Bytes(1, 2)...), "", "x",
			"the model expects [-1,2]"},
		{"binary_data_output not a bool", append([]byte(`{"parameters":{"binary_data_output":1},"inputs":[`+x8+`,`+flagJSON+`]}`), f32Bytes(1, 2)...), "", "", `"binary_data_output" must be true or false`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hl := c.header
			if hl == "" {
				hl = strconv.Itoa(strings.LastIndexByte(string(c.body), '}') + 1)
			}
			_, err := testSig.DecodeBinary(c.body, hl)
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %v (%T) is not a DecodeError", err, err)
			}
			if de.Input != c.input || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %q (input %q), want %q naming input %q", err, de.Input, c.want, c.input)
			}
		})
	}
	// binary_data_size in a request without the header (plain Decode).
	_, err := testSig.Decode([]byte(good))
	if err == nil || !strings.Contains(err.Error(), `input "x": has parameter binary_data_size but the request has no Inference-Header-Content-Length header`) {
		t.Fatalf("binary_data_size without the header: %v", err)
	}
}

func TestSelect(t *testing.T) {
	outs := []tensor.Tensor{
		{Name: "a", DataType: tensor.FP32, Shape: []int64{1}, Data: []float32{1}},
		{Name: "b", DataType: tensor.Int64, Shape: []int64{1}, Data: []int64{2}},
	}
	seq := tensor.Tensor{Name: "s", DataType: tensor.Sequence, Shape: []int64{1}, Data: []any{map[string]any{"0": 1.0}}}
	cases := []struct {
		name   string
		body   string
		outs   []tensor.Tensor
		names  []string
		binary []bool
	}{
		{"all JSON", `{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`, outs, []string{"a", "b"}, nil},
		{"all binary", `{"parameters":{"binary_data_output":true},"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`, outs, []string{"a", "b"}, []bool{true, true}},
		{"binary_data_output false", `{"parameters":{"binary_data_output":false},"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`, outs, []string{"a", "b"}, nil},
		{"selected, one binary", `{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}],"outputs":[{"name":"b","parameters":{"binary_data":true}},{"name":"a"}]}`,
			outs, []string{"b", "a"}, []bool{true, false}},
		{"output overrides request", `{"parameters":{"binary_data_output":true},"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}],"outputs":[{"name":"a","parameters":{"binary_data":false}},{"name":"b"}]}`,
			outs, []string{"a", "b"}, []bool{false, true}},
		{"sequence output keeps JSON", `{"parameters":{"binary_data_output":true},"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}]}`,
			append(outs[:1:1], seq), []string{"a", "s"}, nil},
	}
	d := Decoder{Inputs: testSig.Inputs[:1], Outputs: []tensor.Spec{{Name: "a"}, {Name: "b"}, {Name: "s"}}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := d.Decode([]byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			sel, bin := r.Select(c.outs)
			var names []string
			for _, o := range sel {
				names = append(names, o.Name)
			}
			if !reflect.DeepEqual(names, c.names) || !reflect.DeepEqual(bin, c.binary) {
				t.Fatalf("selected %v binary %v, want %v %v", names, bin, c.names, c.binary)
			}
		})
	}
	if _, err := d.Decode([]byte(`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}],"outputs":[{"name":"a","parameters":{"binary_data":"yes"}}]}`)); err == nil ||
		!strings.Contains(err.Error(), `output "a": parameters: "binary_data" must be true or false`) {
		t.Fatalf("binary_data not a bool: %v", err)
	}
}

func TestAppendBinaryResponse(t *testing.T) {
	r := Response{Model: "m", Version: "1", ID: "r1", Outputs: []tensor.Tensor{
		{Name: "a", DataType: tensor.FP32, Shape: []int64{2}, Data: []float32{1.5, -2}},
		{Name: "b", DataType: tensor.Int64, Shape: []int64{1}, Data: []int64{7}},
	}}
	body, n, err := AppendBinaryResponse(nil, r, []bool{true, false})
	if err != nil {
		t.Fatal(err)
	}
	wantJSON := `{"model_name":"m","model_version":"1","id":"r1","outputs":[{"name":"a","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}},{"name":"b","datatype":"INT64","shape":[1],"data":[7]}]}`
	if string(body[:n]) != wantJSON {
		t.Fatalf("header %s\nwant   %s", body[:n], wantJSON)
	}
	got, err := binarydata.Decode(body[n:], "FP32", []int64{2})
	if err != nil || !reflect.DeepEqual(got, []float32{1.5, -2}) {
		t.Fatalf("block %v %v", got, err)
	}
	if _, _, err := AppendBinaryResponse(nil, r, []bool{true}); err == nil {
		t.Fatal("mismatched flags accepted")
	}
}
