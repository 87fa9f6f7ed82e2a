package binarydata

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// The request from the extension's documentation: two binary inputs
// (UINT32 [2,2], 16 bytes; BOOL [3], 3 bytes) and one output asked for as
// binary.
const docRequestJSON = `{
  "model_name" : "mymodel",
  "inputs" : [
    {
      "name" : "input0",
      "shape" : [ 2, 2 ],
      "datatype" : "UINT32",
      "parameters" : {
        "binary_data_size" : 16
      }
    },
    {
      "name" : "input1",
      "shape" : [ 3 ],
      "datatype" : "BOOL",
      "parameters" : {
        "binary_data_size" : 3
      }
    }
  ],
  "outputs" : [
    {
      "name" : "output0",
      "parameters" : {
        "binary_data" : true
      }
    }
  ]
}`

type docRequest struct {
	Inputs []struct {
		Name       string         `json:"name"`
		Shape      []int64        `json:"shape"`
		Datatype   string         `json:"datatype"`
		Parameters map[string]any `json:"parameters"`
	} `json:"inputs"`
	Parameters map[string]any `json:"parameters"`
	Outputs    []struct {
		Name       string         `json:"name"`
		Parameters map[string]any `json:"parameters"`
	} `json:"outputs"`
}

func TestDocumentedRequest(t *testing.T) {
	var tail []byte
	for _, v := range []uint32{1, 2, 3, 0xdeadbeef} {
		tail = binary.LittleEndian.AppendUint32(tail, v)
	}
	tail = append(tail, 1, 0, 1)
	if len(tail) != 19 {
		t.Fatalf("tail is %d bytes; the documentation says 19", len(tail))
	}
	body := append([]byte(docRequestJSON), tail...)

	head, rest, err := Split(body, strconv.Itoa(len(docRequestJSON)))
	if err != nil {
		t.Fatal(err)
	}
	var req docRequest
	if err := json.Unmarshal(head, &req); err != nil {
		t.Fatalf("JSON part does not parse: %v", err)
	}
	tl := NewTail(rest)
	got := map[string]any{}
	for _, in := range req.Inputs {
		size, ok := in.Parameters[ParamBinaryDataSize].(float64)
		if !ok {
			t.Fatalf("input %s has no %s", in.Name, ParamBinaryDataSize)
		}
		blk, err := tl.Next(int64(size))
		if err != nil {
			t.Fatal(err)
		}
		if got[in.Name], err = Decode(blk, in.Datatype, in.Shape); err != nil {
			t.Fatal(err)
		}
	}
	if err := tl.Done(); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"input0": []uint32{1, 2, 3, 0xdeadbeef}, "input1": []bool{true, false, true}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %v, want %v", got, want)
	}
	if !WantBinary(req.Parameters[ParamBinaryDataOutput], req.Outputs[0].Parameters[ParamBinaryData]) {
		t.Error("output0 asked for binary data, WantBinary says no")
	}
}

// The documented response: output0 FP32 [3,2] as 24 bytes after the JSON.
func TestDocumentedResponse(t *testing.T) {
	vals := []float32{1, 2, 3, 4.5, -0.25, float32(math.Inf(1))}
	body, hl, bin, err := AppendResponse(nil, Response{ModelName: "mymodel", ModelVersion: "1", ID: "42",
		Outputs: []Output{{Name: "output0", DataType: "FP32", Shape: []int64{3, 2}, Data: vals, Binary: true},
			{Name: "label", DataType: "BYTES", Shape: []int64{1}, Data: []string{"cat"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if !bin || hl != len(body)-24 {
		t.Fatalf("binary=%v header length %d, body %d: want the last 24 bytes binary", bin, hl, len(body))
	}
	var resp struct {
		ModelName string `json:"model_name"`
		ID        string `json:"id"`
		Outputs   []struct {
			Name       string         `json:"name"`
			Shape      []int64        `json:"shape"`
			Datatype   string         `json:"datatype"`
			Parameters map[string]any `json:"parameters"`
			Data       []string       `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(body[:hl], &resp); err != nil {
		t.Fatalf("JSON header %q: %v", body[:hl], err)
	}
	o := resp.Outputs[0]
	if o.Parameters[ParamBinaryDataSize] != float64(24) || o.Datatype != "FP32" || !reflect.DeepEqual(o.Shape, []int64{3, 2}) {
		t.Fatalf("output header %+v", o)
	}
	if resp.Outputs[1].Data[0] != "cat" || resp.ID != "42" {
		t.Fatalf("JSON output or id lost: %+v", resp)
	}
	back, err := Decode(body[hl:], "FP32", []int64{3, 2})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, vals) {
		t.Fatalf("binary block decodes to %v, want %v", back, vals)
	}

	// no binary output: plain JSON
	body, hl, bin, err = AppendResponse(nil, Response{ModelName: "m", ModelVersion: "2", Parameters: map[string]any{"k": 1},
		Outputs: []Output{{Name: "y", DataType: "INT64", Shape: []int64{2}, Data: []int64{1, -2}}}})
	if err != nil || bin || hl != len(body) {
		t.Fatalf("JSON-only response: binary=%v hl=%d len=%d err=%v", bin, hl, len(body), err)
	}
	if want := `{"model_name":"m","model_version":"2","parameters":{"k":1},"outputs":[{"name":"y","datatype":"INT64","shape":[2],"data":[1,-2]}]}`; string(body) != want {
		t.Fatalf("got  %s\nwant %s", body, want)
	}
}

func TestRoundTripEveryType(t *testing.T) {
	for _, tc := range []struct {
		dt   string
		data any
	}{
		{"BOOL", []bool{true, false, true, true}},
		{"INT8", []int8{-128, 0, 127, 5}}, {"UINT8", []uint8{0, 255, 7, 9}},
		{"INT16", []int16{-32768, 32767, 1, -1}}, {"UINT16", []uint16{0, 65535, 1, 2}}, {"FP16", []float32{1, float32(math.Inf(1)), 0.333251953125, -65504}},
		{"BF16", []float32{1, -2.5, 1.1754944e-38, float32(math.Inf(-1))}},
		{"INT32", []int32{math.MinInt32, math.MaxInt32, 0, -7}}, {"UINT32", []uint32{0, math.MaxUint32, 3, 4}},
		{"FP32", []float32{0.5, -1e30, float32(math.Inf(-1)), 3}},
		{"INT64", []int64{math.MinInt64, math.MaxInt64, 0, 1}}, {"UINT64", []uint64{0, math.MaxUint64, 2, 3}},
		{"FP64", []float64{math.Pi, -0.0, 1e-310, 2}},
		{"BYTES", []string{"", "a", "\x00\xff", strings.Repeat("z", 300)}},
	} {
		t.Run(tc.dt, func(t *testing.T) {
			raw, err := Append(nil, tc.dt, tc.data)
			if err != nil {
				t.Fatal(err)
			}
			if want := binarySize(tc.dt, tc.data); len(raw) != want {
				t.Fatalf("Append wrote %d bytes, binarySize says %d", len(raw), want)
			}
			for off := range 3 { // aligned and unaligned (copy path)
				buf := append(make([]byte, off, off+len(raw)), raw...)[off:]
				got, err := Decode(buf, tc.dt, []int64{2, 2})
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, tc.data) {
					t.Fatalf("offset %d: got %v, want %v", off, got, tc.data)
				}
			}
		})
	}
}

func TestErrors(t *testing.T) {
	body := []byte(`{"inputs":[]}` + "\x01\x02")
	for _, tc := range []struct {
		name string
		f    func() error
		want string
	}{
		{"header not a number", func() error { _, _, err := Split(body, "abc"); return err }, "not a byte count"},
		{"header negative", func() error { _, _, err := Split(body, "-1"); return err }, "not a byte count"},
		{"header too long", func() error { _, _, err := Split(body, "100"); return err }, "exceeds the body length"},
		{"size too big", func() error { _, err := NewTail([]byte{1, 2}).Next(3); return err }, "exceeds the 2 bytes left"},
		{"size negative", func() error { _, err := NewTail([]byte{1, 2}).Next(-1); return err }, "negative"},
		{"bytes left over", func() error { tl := NewTail([]byte{1, 2}); _, _ = tl.Next(1); return tl.Done() }, "belong to no input"},
		{"wrong byte count", func() error { _, err := Decode(make([]byte, 7), "FP32", []int64{2}); return err }, "7 bytes for FP32 shape [2], want 8"},
		{"bool not 0/1", func() error { _, err := Decode([]byte{0, 2}, "BOOL", []int64{2}); return err }, "want 0 or 1"},
		{"bytes truncated prefix", func() error { _, err := Decode([]byte{1, 0}, "BYTES", []int64{1}); return err }, "truncated"},
		{"bytes too long", func() error { _, err := Decode([]byte{9, 0, 0, 0, 'a'}, "BYTES", []int64{1}); return err }, "exceeds"},
		{"bytes left", func() error { _, err := Decode([]byte{1, 0, 0, 0, 'a', 'b'}, "BYTES", []int64{1}); return err }, "left after"},
		{"unknown datatype", func() error { _, err := Decode(nil, "FP8", []int64{1}); return err }, "unknown datatype"},
		{"negative dim", func() error { _, err := Decode(nil, "FP32", []int64{-1}); return err }, "negative"},
		{"unencodable", func() error { _, err := Append(nil, "FP32", []complex64{1}); return err }, "cannot encode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrFormat) {
				t.Fatalf("err %v, want an ErrFormat containing %q", err, tc.want)
			}
		})
	}
	if h, tl, err := Split(body, ""); err != nil || !bytes.Equal(h, body) || tl != nil {
		t.Errorf("Split without the header: %q %q %v", h, tl, err)
	}
}

func TestWantBinary(t *testing.T) {
	for _, tc := range []struct {
		all, one any
		want     bool
	}{{nil, nil, false}, {true, nil, true}, {true, false, false}, {false, true, true}, {nil, true, true}, {"yes", nil, false}} {
		if got := WantBinary(tc.all, tc.one); got != tc.want {
			t.Errorf("WantBinary(%v, %v) = %v", tc.all, tc.one, got)
		}
	}
}

// FuzzDecode: arbitrary bytes never panic, and whatever decodes encodes back
// to the same bytes.
func FuzzDecode(f *testing.F) {
	dts := []string{"BOOL", "INT8", "UINT8", "INT16", "UINT16", "FP16", "BF16", "INT32", "UINT32", "FP32", "INT64", "UINT64", "FP64", "BYTES"}
	f.Add([]byte{1, 0, 0, 0, 'a', 0, 0, 0, 0}, uint8(12), uint8(2))
	f.Add([]byte{0, 0, 128, 63}, uint8(8), uint8(1))
	f.Fuzz(func(t *testing.T, raw []byte, dti, n uint8) {
		dt := dts[int(dti)%len(dts)]
		v, err := Decode(raw, dt, []int64{int64(n)})
		if err != nil {
			return
		}
		back, err := Append(nil, dt, v)
		if err != nil {
			t.Fatal(err)
		}
		if (dt == "FP16" || dt == "BF16") && hasNaN(v.([]float32)) {
			return // NaN payloads are not preserved through float32
		}
		if !bytes.Equal(back, raw) {
			t.Fatalf("%s: %x decodes and encodes to %x", dt, raw, back)
		}
	})
}

func hasNaN(s []float32) bool {
	for _, v := range s {
		if v != v {
			return true
		}
	}
	return false
}
