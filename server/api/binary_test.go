package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/binarydata"
	"github.com/flywheel-ml/flywheel/server/oip"
	"github.com/flywheel-ml/flywheel/server/repository"
	"github.com/flywheel-ml/flywheel/server/testmodel"
)

// binaryBody builds an infer request for inputs: those for which binary
// returns true carry binary_data_size and travel as bytes after the JSON,
// the others carry JSON data. extra is merged into the JSON object.
func binaryBody(t testing.TB, inputs []tdInput, binary func(i int) bool, extra map[string]any) (body []byte, headerLength int) {
	t.Helper()
	req := map[string]any{}
	for k, v := range extra {
		req[k] = v
	}
	var ins []map[string]any
	var tail []byte
	for i, in := range inputs {
		m := map[string]any{"name": in.name, "datatype": in.dt, "shape": in.shape}
		if binary(i) {
			n := len(tail)
			var err error
			if tail, err = binarydata.Append(tail, string(in.dt), in.data); err != nil {
				t.Fatal(err)
			}
			m["parameters"] = map[string]any{"binary_data_size": len(tail) - n}
		} else {
			data := in.data
			if u, ok := data.([]uint8); ok { // json.Marshal writes []uint8 as base64
				ints := make([]int, len(u))
				for j, v := range u {
					ints[j] = int(v)
				}
				data = ints
			}
			m["data"] = data
		}
		ins = append(ins, m)
	}
	req["inputs"] = ins
	head, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return append(head, tail...), len(head)
}

func (ts *testServer) postBinary(t testing.TB, path string, body []byte, headerLength int) resp {
	t.Helper()
	return ts.do(t, "POST", path, binarydata.ContentType, body, binarydata.HeaderContentLength, strconv.Itoa(headerLength))
}

type inferOutput struct {
	Name       string          `json:"name"`
	Datatype   string          `json:"datatype"`
	Shape      []int64         `json:"shape"`
	Parameters map[string]any  `json:"parameters"`
	Data       json.RawMessage `json:"data"`
}

// binaryOutputs parses a binary tensor data response into JSON outputs: each
// binary block is decoded with binarydata.Decode and written as JSON data.
func binaryOutputs(t testing.TB, r resp) []inferOutput {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != binarydata.ContentType {
		t.Fatalf("content type %q, want %s: %s", ct, binarydata.ContentType, r.body)
	}
	n, err := strconv.Atoi(r.header.Get(binarydata.HeaderContentLength))
	if err != nil || n > len(r.body) {
		t.Fatalf("%s %q for a %d-byte body", binarydata.HeaderContentLength, r.header.Get(binarydata.HeaderContentLength), len(r.body))
	}
	var got struct{ Outputs []inferOutput }
	if err := json.Unmarshal(r.body[:n], &got); err != nil {
		t.Fatalf("JSON header: %v: %s", err, r.body[:n])
	}
	tail := r.body[n:]
	for i, o := range got.Outputs {
		size, ok := o.Parameters["binary_data_size"].(float64)
		if !ok {
			continue
		}
		if o.Data != nil {
			t.Errorf("output %q has data and binary_data_size", o.Name)
		}
		if int(size) > len(tail) {
			t.Fatalf("output %q: binary_data_size %v, %d bytes left", o.Name, size, len(tail))
		}
		data, err := binarydata.Decode(tail[:int(size)], o.Datatype, o.Shape)
		if err != nil {
			t.Fatalf("output %q: %v", o.Name, err)
		}
		tail = tail[int(size):]
		if got.Outputs[i].Data, err = oip.AppendData(nil, data); err != nil {
			t.Fatal(err)
		}
	}
	if len(tail) != 0 {
		t.Errorf("%d bytes after the last binary output", len(tail))
	}
	return got.Outputs
}

func jsonOutputs(t testing.TB, r resp) []inferOutput {
	t.Helper()
	var got struct{ Outputs []inferOutput }
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatalf("%v: %s", err, r.body)
	}
	return got.Outputs
}

// TestBinaryTensorDataMatchesJSON serves the onnxruntime_go test models
// (FP32, FP64, FP16, BF16, INT32, UINT8, BYTES inputs; a SEQUENCE output)
// and sends each request as JSON, with every input binary, with JSON and
// binary inputs mixed, and with binary outputs: the answers must be the
// JSON answer, and the observers must see the same input tensors.
func TestBinaryTensorDataMatchesJSON(t *testing.T) {
	td := ortTestData(t)
	root := t.TempDir()
	for _, m := range tdModels {
		if m.noInfer != "" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(td, m.file))
		if err != nil {
			t.Fatal(err)
		}
		writeVersion(t, root, m.model, 1, map[string][]byte{"model.onnx": b})
	}
	writeVersion(t, root, "mlp", 1, map[string][]byte{"model.onnx": testmodel.MLPSmall()})
	rec := &recorder{}
	ts := startServer(t, root, func(_ *repository.Config, o *api.Options) { o.Observers = []api.Observer{rec} })
	lastInputs := func() any {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.obs[len(rec.obs)-1].Inputs
	}
	models := append(tdModels[:len(tdModels):len(tdModels)], struct {
		file    string
		model   string
		inputs  []tdInput
		noInfer string
	}{model: "mlp", inputs: []tdInput{{"input", "FP32", []int64{2, 16}, append(testmodel.ReferenceRow(16), seqF32(16)...)}}})
	all := func(int) bool { return true }
	none := func(int) bool { return false }
	for _, m := range models {
		if m.noInfer != "" {
			continue
		}
		t.Run(m.model, func(t *testing.T) {
			path := "/v2/models/" + m.model + "/infer"
			id := map[string]any{"id": "bin-" + m.model}
			body, _ := binaryBody(t, m.inputs, none, id)
			want := ts.post(t, path, body)
			if want.code != 200 {
				t.Fatalf("JSON request: %d %s", want.code, want.body)
			}
			wantInputs := lastInputs()
			variants := []struct {
				name   string
				binary func(int) bool
			}{{"all inputs binary", all}}
			if len(m.inputs) > 1 {
				variants = append(variants, struct {
					name   string
					binary func(int) bool
				}{"mixed JSON and binary inputs", func(i int) bool { return i%2 == 1 }})
			}
			for _, v := range variants {
				body, n := binaryBody(t, m.inputs, v.binary, id)
				r := ts.postBinary(t, path, body, n)
				if r.code != 200 || !bytes.Equal(r.body, want.body) || r.header.Get("Content-Type") != "application/json" {
					t.Errorf("%s: %d %s %s\nJSON request: %s", v.name, r.code, r.header.Get("Content-Type"), r.body, want.body)
				}
				if got := lastInputs(); !reflect.DeepEqual(got, wantInputs) {
					t.Errorf("%s: observers saw %+v, JSON request %+v", v.name, got, wantInputs)
				}
			}

			// Binary outputs decode to the JSON outputs.
			wantOuts := jsonOutputs(t, want)
			body, n := binaryBody(t, m.inputs, all, map[string]any{"id": id["id"], "parameters": map[string]any{"binary_data_output": true}})
			r := ts.postBinary(t, path, body, n)
			if r.code != 200 {
				t.Fatalf("binary outputs: %d %s", r.code, r.body)
			}
			var last inferOutput // the last tensor output
			nonTensor := false
			for _, o := range wantOuts {
				if o.Datatype == "SEQUENCE" || o.Datatype == "MAP" {
					nonTensor = true
				} else {
					last = o
				}
			}
			if nonTensor { // SEQUENCE and MAP have no binary form: the response is JSON
				if !bytes.Equal(r.body, want.body) {
					t.Errorf("non-tensor output: %s\nJSON request: %s", r.body, want.body)
				}
			} else {
				compareOutputs(t, binaryOutputs(t, r), wantOuts)
			}

			// One selected tensor output, asked for as binary, with JSON inputs.
			body, _ = binaryBody(t, m.inputs, none, map[string]any{"outputs": []any{map[string]any{"name": last.Name, "parameters": map[string]any{"binary_data": true}}}})
			r = ts.post(t, path, body)
			if r.code != 200 {
				t.Fatalf("selected binary output: %d %s", r.code, r.body)
			}
			compareOutputs(t, binaryOutputs(t, r), []inferOutput{last})
		})
	}
}

func compareOutputs(t *testing.T, got, want []inferOutput) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d outputs, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.Name || g.Datatype != w.Datatype || fmt.Sprint(g.Shape) != fmt.Sprint(w.Shape) {
			t.Errorf("output %d: %s %s %v, want %s %s %v", i, g.Name, g.Datatype, g.Shape, w.Name, w.Datatype, w.Shape)
		}
		if err := sameJSON(g.Data, w.Data); err != nil {
			t.Errorf("output %q: %v\nbinary %s\nJSON   %s", w.Name, err, g.Data, w.Data)
		}
	}
}

// TestBinaryTensorDataMalformed sends malformed binary requests: each gets
// a 4xx naming the problem, and valid JSON and binary requests are served
// after it.
func TestBinaryTensorDataMalformed(t *testing.T) {
	root := t.TempDir()
	writeVersion(t, root, "mlp", 1, map[string][]byte{"model.onnx": testmodel.MLPSmall()})
	ts := startServer(t, root)
	const infer = "/v2/models/mlp/infer"
	row := testmodel.ReferenceRow(16)
	block, _ := binarydata.Append(nil, "FP32", row)
	head := func(size int, extra string) string {
		return `{"inputs":[{"name":"input","shape":[1,16],"datatype":"FP32","parameters":{"binary_data_size":` + strconv.Itoa(size) + `}}]` + extra + `}`
	}
	good := head(64, "")
	hl := strconv.Itoa(len(good))
	cat := func(parts ...string) string { return strings.Join(parts, "") }
	octet := binarydata.ContentType
	cases := []struct {
		name, ctype, body string
		hdr               []string
		code              int
		want              string
	}{
		{"header not a number", octet, cat(good, string(block)), []string{binarydata.HeaderContentLength, "64k"}, 400, `Inference-Header-Content-Length "64k" is not a byte count`},
		{"negative header", octet, cat(good, string(block)), []string{binarydata.HeaderContentLength, "-5"}, 400, "is not a byte count"},
		{"header beyond body", octet, cat(good, string(block)), []string{binarydata.HeaderContentLength, "100000"}, 400, "Inference-Header-Content-Length 100000 exceeds the body length"},
		{"header inside the JSON", octet, cat(good, string(block)), []string{binarydata.HeaderContentLength, strconv.Itoa(len(good) - 2)}, 400, "invalid JSON inference header"},
		{"header covers the block", octet, cat(good, string(block)), []string{binarydata.HeaderContentLength, strconv.Itoa(len(good) + 64)}, 400, "invalid JSON inference header"},
		{"size disagrees with shape", octet, cat(head(60, ""), string(block[:60])), []string{binarydata.HeaderContentLength, strconv.Itoa(len(head(60, "")))}, 400,
			`input "input": binary_data_size 60 does not match shape [1,16]: 16 FP32 elements are 64 bytes`},
		{"block shorter than size", octet, cat(good, string(block[:60])), []string{binarydata.HeaderContentLength, hl}, 400, `input "input": binary tensor data: binary_data_size 64 exceeds the 60 bytes left`},
		{"leftover bytes", octet, cat(good, string(block), "abcd"), []string{binarydata.HeaderContentLength, hl}, 400, "4 bytes after the JSON header belong to no input"},
		{"binary_data_size without the header", "application/json", cat(good, string(block)), nil, 400, "invalid JSON"},
		{"binary_data_size without the header or bytes", "application/json", good, nil, 400,
			`input "input": has parameter binary_data_size but the request has no Inference-Header-Content-Length header`},
		{"data and binary_data_size", octet, cat(`{"inputs":[{"name":"input","shape":[1,16],"datatype":"FP32","data":[1],"parameters":{"binary_data_size":64}}]}`, string(block)),
			[]string{binarydata.HeaderContentLength, strconv.Itoa(len(`{"inputs":[{"name":"input","shape":[1,16],"datatype":"FP32","data":[1],"parameters":{"binary_data_size":64}}]}`))}, 400, "both data and parameter binary_data_size"},
		{"binary_data_output not a bool", octet, cat(head(64, `,"parameters":{"binary_data_output":"yes"}`), string(block)),
			[]string{binarydata.HeaderContentLength, strconv.Itoa(len(head(64, `,"parameters":{"binary_data_output":"yes"}`)))}, 400, `"binary_data_output" must be true or false`},
		{"binary content type elsewhere", "text/plain", cat(good, string(block)), []string{binarydata.HeaderContentLength, hl}, 415, "send application/json, or application/octet-stream"},
	}
	validJSON, _ := json.Marshal(refRequest())
	validBinary := []byte(cat(good, string(block)))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := ts.do(t, "POST", infer, c.ctype, []byte(c.body), c.hdr...)
			var e struct{ Error string }
			_ = json.Unmarshal(r.body, &e)
			if r.code != c.code || !strings.Contains(e.Error, c.want) {
				t.Errorf("got %d %s, want %d with %q", r.code, r.body, c.code, c.want)
			}
			if ok := ts.do(t, "POST", infer, "application/json", validJSON); ok.code != 200 {
				t.Fatalf("valid JSON request after %q: %d %s", c.name, ok.code, ok.body)
			}
			if ok := ts.postBinary(t, infer, validBinary, len(good)); ok.code != 200 {
				t.Fatalf("valid binary request after %q: %d %s", c.name, ok.code, ok.body)
			}
		})
	}

	// The content types a binary request may come with.
	want := ts.do(t, "POST", infer, "application/json", validJSON)
	for _, c := range []struct{ ctype, header string }{
		{octet, hl}, {"application/json", hl}, {"", hl},
		{"application/vnd.sagemaker-triton.binary+json;json-header-size=" + hl, ""},
	} {
		var hdr []string
		if c.header != "" {
			hdr = []string{binarydata.HeaderContentLength, c.header}
		}
		r := ts.do(t, "POST", infer, c.ctype, validBinary, hdr...)
		if r.code != 200 || !bytes.Equal(jsonOutputs(t, r)[0].Data, jsonOutputs(t, want)[0].Data) {
			t.Errorf("content type %q: %d %s", c.ctype, r.code, r.body)
		}
	}

	// GET /v2 advertises the extension.
	r := ts.do(t, "GET", "/v2", "", nil)
	var md struct{ Extensions []string }
	if err := json.Unmarshal(r.body, &md); err != nil || !strings.Contains(strings.Join(md.Extensions, ","), "binary_tensor_data") {
		t.Errorf("GET /v2: %s", r.body)
	}
}
