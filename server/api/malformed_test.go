package api_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/repository"
	"github.com/flywheel-ml/flywheel/server/testmodel"
)

func mlpCard(name string, version int) []byte {
	feats := make([]string, 16)
	for i := range feats {
		feats[i] = fmt.Sprintf("f%d", i)
	}
	c := modelrepo.Card{Name: name, Version: version, Task: "classification",
		Inputs:  []modelrepo.Tensor{{Name: "input", DataType: "FP32", Shape: []int64{-1, 16}, Features: feats}},
		Outputs: []modelrepo.Tensor{{Name: "probabilities", DataType: "FP32", Shape: []int64{-1, 3}}}}
	b, _ := json.Marshal(c)
	return b
}

func refRequest() map[string]any {
	return map[string]any{"inputs": []map[string]any{{"name": "input", "datatype": "FP32", "shape": []int{1, 16}, "data": testmodel.ReferenceRow(16)}}}
}

// TestMalformedRequests sends a table of bad requests: each must get a 4xx
// whose message names the problem, and the next valid request is served.
func TestMalformedRequests(t *testing.T) {
	root := t.TempDir()
	writeVersion(t, root, "mlp", 1, map[string][]byte{"model.onnx": testmodel.MLPSmall(), "model.json": mlpCard("mlp", 1)})
	writeVersion(t, root, "broken", 1, map[string][]byte{"model.onnx": []byte("not an onnx model")})
	ts := startServer(t, root, func(_ *repository.Config, o *api.Options) {
		o.Config.BodyLimit = 64 << 10
		o.Config.AdminToken = "s3cret"
	})
	row := `[-0.5,-0.357,-0.214,-0.071,0.071,0.214,0.357,-0.5,-0.357,-0.214,-0.071,0.071,0.214,0.357,-0.5,-0.357]`
	in := func(shape, dt, data string) string {
		return `{"inputs":[{"name":"input","shape":` + shape + `,"datatype":"` + dt + `","data":` + data + `}]}`
	}
	const infer = "/v2/models/mlp/infer"
	// Just over the 64 KiB limit: serve answers 413 from Content-Length and closes
	// without reading the body, so a body much larger than the socket buffers
	// made the client's write fail with a reset before it read the 413.
	huge := `{"inputs":[{"name":"input","shape":[1,16],"datatype":"FP32","data":[` + strings.Repeat("0.5,", 17000) + `0]}]}`
	cases := []struct {
		name, method, path, ctype, body string
		hdr                             []string
		code                            int
		want                            string
	}{
		{"invalid JSON", "POST", infer, "application/json", `{"inputs":[`, nil, 400, "invalid JSON"},
		{"not an object", "POST", infer, "application/json", `[1,2]`, nil, 400, "invalid JSON"},
		{"empty body", "POST", infer, "application/json", ``, nil, 400, "invalid JSON"},
		{"no inputs", "POST", infer, "application/json", `{"inputs":[]}`, nil, 400, "no inputs"},
		{"wrong datatype", "POST", infer, "application/json", in(`[1,16]`, "FP64", row), nil, 400, "FP64 does not match the model's FP32"},
		{"unknown datatype", "POST", infer, "application/json", in(`[1,16]`, "FLOAT", row), nil, 400, `unknown datatype "FLOAT"`},
		{"element count", "POST", infer, "application/json", in(`[2,16]`, "FP32", row), nil, 400, "data has 16 elements, shape [2,16] needs 32"},
		{"shape mismatch", "POST", infer, "application/json", in(`[1,15]`, "FP32", row), nil, 400, "dimension 1 of shape [1,15] is 15, the model expects [-1,16]"},
		{"rank mismatch", "POST", infer, "application/json", in(`[16]`, "FP32", row), nil, 400, "has 1 dimensions"},
		{"ragged", "POST", infer, "application/json", in(`[2,16]`, "FP32", `[`+row+`,[1,2]]`), nil, 400, "ragged"},
		{"unknown input", "POST", infer, "application/json", `{"inputs":[{"name":"x","shape":[1,16],"datatype":"FP32","data":` + row + `}]}`, nil, 400, `input "x": unknown input`},
		{"missing input", "POST", infer, "application/json", `{"inputs":[{"shape":[1,16],"datatype":"FP32","data":` + row + `}]}`, nil, 400, "no name"},
		{"negative dim", "POST", infer, "application/json", in(`[-1,16]`, "FP32", row), nil, 400, "negative"},
		{"huge dims", "POST", infer, "application/json", in(`[9007199254740993,16]`, "FP32", row), nil, 400, "more than"},
		{"non-numeric", "POST", infer, "application/json", in(`[1,16]`, "FP32", `["a",`+row[1:]), nil, 400, `"a" is a string`},
		{"null element", "POST", infer, "application/json", in(`[1,16]`, "FP32", `[null,`+row[1:]), nil, 400, "null is not a number"},
		{"overflow", "POST", infer, "application/json", in(`[1,16]`, "FP32", `[1e40,`+row[1:]), nil, 400, "out of range for FP32"},
		{"data object", "POST", infer, "application/json", in(`[1,16]`, "FP32", `{"v":1}`), nil, 400, "must be a JSON array"},
		{"shape string", "POST", infer, "application/json", in(`"1x16"`, "FP32", row), nil, 400, "shape"},
		{"unknown output", "POST", infer, "application/json", `{"inputs":[{"name":"input","shape":[1,16],"datatype":"FP32","data":` + row + `}],"outputs":[{"name":"logits"}]}`, nil, 400, `output "logits": unknown output`},
		{"bad parameters", "POST", infer, "application/json", `{"parameters":{"a":{"b":1}},"inputs":[{"name":"input","shape":[1,16],"datatype":"FP32","data":` + row + `}]}`, nil, 400, "string, number or bool"},
		{"unknown model", "POST", "/v2/models/nope/infer", "application/json", in(`[1,16]`, "FP32", row), nil, 404, `model not found: "nope"`},
		{"unknown version", "POST", "/v2/models/mlp/versions/9/infer", "application/json", in(`[1,16]`, "FP32", row), nil, 404, "has no version 9"},
		{"bad version", "POST", "/v2/models/mlp/versions/v1/infer", "application/json", in(`[1,16]`, "FP32", row), nil, 400, `version "v1" is not a positive integer`},
		{"zero version", "POST", "/v2/models/mlp/versions/0/infer", "application/json", in(`[1,16]`, "FP32", row), nil, 400, "positive integer"},
		{"plus version", "POST", "/v2/models/mlp/versions/+1/infer", "application/json", in(`[1,16]`, "FP32", row), nil, 400, "positive integer"},
		{"zero-padded version", "POST", "/v2/models/mlp/versions/01/infer", "application/json", in(`[1,16]`, "FP32", row), nil, 400, "positive integer"},
		{"zero-padded mlflow version", "POST", "/invocations?model=mlp&version=01", "application/json", `{"inputs":[` + row + `]}`, nil, 400, "positive integer"},
		{"failed model", "POST", "/v2/models/broken/infer", "application/json", in(`[1,16]`, "FP32", row), nil, 503, "no ready version"},
		{"oversized body", "POST", infer, "application/json", huge, nil, 413, "larger than the limit of 65536 bytes"},
		{"wrong content type", "POST", infer, "text/plain", in(`[1,16]`, "FP32", row), nil, 415, `unsupported content type "text/plain"`},
		{"form content type", "POST", infer, "application/x-www-form-urlencoded", in(`[1,16]`, "FP32", row), nil, 415, "send application/json"},
		{"unknown route", "GET", "/v2/nothing/here", "", "", nil, 404, "no route for GET /v2/nothing/here"},
		{"unknown model metadata", "GET", "/v2/models/nope", "", "", nil, 404, "model not found"},
		{"unload without token", "POST", "/v2/repository/models/mlp/unload", "", "", nil, 401, "bearer token"},
		{"unload wrong token", "POST", "/v2/repository/models/mlp/unload", "", "", []string{"Authorization", "Bearer nope"}, 401, "bearer token"},
		{"load unknown model", "POST", "/v2/repository/models/ghost/load", "", "", []string{"Authorization", "Bearer s3cret"}, 404, "not in the model repository"},
		{"index bad JSON", "POST", "/v2/repository/index", "application/json", `{"ready":`, nil, 400, "invalid JSON"},
		{"mlflow no format", "POST", "/invocations?model=mlp", "application/json", `{"rows":[]}`, nil, 400, "exactly one of dataframe_split"},
		{"mlflow two formats", "POST", "/invocations?model=mlp", "application/json", `{"instances":[[1]],"inputs":[[1]]}`, nil, 400, "exactly one"},
		{"mlflow missing column", "POST", "/invocations?model=mlp", "application/json", `{"dataframe_split":{"columns":["f0"],"data":[[1]]}}`, nil, 400, `feature columns: "f1", "f2"`},
		{"mlflow ragged rows", "POST", "/invocations?model=mlp", "application/json", `{"instances":[[1,2],[1]]}`, nil, 400, "ragged"},
		{"mlflow wrong width", "POST", "/invocations?model=mlp", "application/json", `{"instances":[[1,2]]}`, nil, 400, "the model expects [-1,16]"},
		{"mlflow string value", "POST", "/invocations?model=mlp", "application/json", `{"dataframe_records":[{"f0":"x","f1":1,"f2":1,"f3":1,"f4":1,"f5":1,"f6":1,"f7":1,"f8":1,"f9":1,"f10":1,"f11":1,"f12":1,"f13":1,"f14":1,"f15":1}]}`, nil, 400, `"x" is a string`},
		{"mlflow ambiguous model", "POST", "/invocations", "application/json", `{"instances":[[1]]}`, nil, 400, "choose one with ?model="},
		{"mlflow unknown model", "POST", "/invocations?model=nope", "application/json", `{"instances":[[1]]}`, nil, 404, "model not found"},
	}
	valid, _ := json.Marshal(refRequest())
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := ts.do(t, c.method, c.path, c.ctype, []byte(c.body), c.hdr...)
			var e struct{ Error string }
			_ = json.Unmarshal(r.body, &e)
			if r.code != c.code || !strings.Contains(e.Error, c.want) {
				t.Errorf("got %d %s, want %d with %q", r.code, r.body, c.code, c.want)
			}
			if r.header.Get("X-Request-ID") == "" {
				t.Error("no X-Request-ID on the error response")
			}
			ok := ts.do(t, "POST", infer, "application/json", valid)
			if ok.code != 200 {
				t.Fatalf("valid request after %q: %d %s", c.name, ok.code, ok.body)
			}
		})
	}
	// The failed model shows as UNAVAILABLE with its reason in the index and the metrics.
	idx := ts.post(t, "/v2/repository/index", "")
	if !strings.Contains(string(idx.body), `{"name":"broken","version":"1","state":"UNAVAILABLE","reason":"reading model signature`) {
		t.Errorf("index: %s", idx.body)
	}
	m := ts.do(t, "GET", "/metrics", "", nil)
	for _, want := range []string{`flywheel_model_version_state{model="broken",state="UNAVAILABLE",version="1"} 1`,
		`flywheel_model_version_ready{model="broken",version="1"} 0`, `flywheel_model_load_attempts_total{model="broken",outcome="failure"} 1`,
		`flywheel_http_requests_total{code="404",method="GET",route="unmatched"}`,
		`flywheel_model_load_attempts_total{model="mlp",outcome="failure"} 0`,
		`flywheel_inference_requests_total{model="mlp",outcome="failure",version="1"}`} {
		if !strings.Contains(string(m.body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	t.Logf("%d malformed requests rejected with 4xx, each followed by a served request", len(cases))
}
