package api_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/repository"
	"github.com/flywheel-ml/flywheel/server/testmodel"
)

// TestRoutesWithoutModels builds the app on an empty repository, without
// ONNX Runtime, and lists the routes (the OpenAPI document must match them).
func TestRoutesWithoutModels(t *testing.T) {
	rc := repository.DefaultConfig()
	rc.Root = t.TempDir()
	repo, err := repository.New(repository.Options{Config: rc, Loader: func(string, ortOpts) (repository.Loaded, error) {
		t.Fatal("no model should load")
		return nil, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Options{Repository: repo})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range srv.Routes() {
		if r.Method == "HEAD" {
			continue // fiber registers HEAD beside every GET
		}
		got = append(got, r.Method+" "+r.Path)
	}
	sort.Strings(got)
	want := []string{
		"GET /health", "GET /ping", "GET /v2", "GET /v2/health/live", "GET /v2/health/ready",
		"GET /v2/models/:model", "GET /v2/models/:model/ready", "GET /v2/models/:model/versions/:version",
		"GET /v2/models/:model/versions/:version/ready", "GET /version",
		"POST /invocations", "POST /v2/models/:model/infer", "POST /v2/models/:model/versions/:version/infer",
		"POST /v2/repository/index", "POST /v2/repository/models/:model/load", "POST /v2/repository/models/:model/unload",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("routes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Not ready until SetReady; live always.
	for _, c := range []struct {
		path string
		code int
	}{{"/v2/health/live", 200}, {"/v2/health/ready", 503}, {"/ping", 503}} {
		res, err := srv.App().Test(httptest.NewRequest("GET", c.path, nil))
		if err != nil || res.StatusCode != c.code {
			t.Errorf("%s: %v %v, want %d", c.path, res.StatusCode, err, c.code)
		}
	}
	srv.SetReady(true)
	res, _ := srv.App().Test(httptest.NewRequest("POST", "/v2/repository/index", nil))
	var idx []any
	if err := json.NewDecoder(res.Body).Decode(&idx); err != nil || res.StatusCode != 200 || len(idx) != 0 {
		t.Errorf("index of an empty repository: %d %v %v", res.StatusCode, idx, err)
	}
}

type recorder struct {
	mu  sync.Mutex
	obs []api.Observation
}

func (r *recorder) Observe(o api.Observation) {
	r.mu.Lock()
	r.obs = append(r.obs, o)
	r.mu.Unlock()
}

// TestProtocols covers metadata, readiness, OIP infer with ids and output
// selection, MLflow scoring in every format, observers and metrics.
func TestProtocols(t *testing.T) {
	root := t.TempDir()
	writeVersion(t, root, "mlp", 1, map[string][]byte{"model.onnx": testmodel.MLPSmall(), "model.json": mlpCard("mlp", 1)})
	writeVersion(t, root, "nocard", 1, map[string][]byte{"model.onnx": testmodel.MLPSmall()})
	rec := &recorder{}
	ts := startServer(t, root, func(_ *repository.Config, o *api.Options) { o.Observers = []api.Observer{rec} })

	r := ts.do(t, "GET", "/v2", "", nil)
	if r.code != 200 || !strings.Contains(string(r.body), `"model_repository"`) {
		t.Errorf("server metadata: %d %s", r.code, r.body)
	}
	r = ts.do(t, "GET", "/v2/models/mlp/versions/1", "", nil)
	want := `{"name":"mlp","versions":["1"],"platform":"onnxruntime_onnx","inputs":[{"name":"input","datatype":"FP32","shape":[-1,16]}],"outputs":[{"name":"probabilities","datatype":"FP32","shape":[-1,3]}],` +
		`"parameters":{"features":["f0","f1","f2","f3","f4","f5","f6","f7","f8","f9","f10","f11","f12","f13","f14","f15"],"task":"classification","version":"1"}}`
	if r.code != 200 || string(r.body) != want {
		t.Errorf("model metadata: %d %s\nwant %s", r.code, r.body, want)
	}
	// Without a card: the signature only.
	if r := ts.do(t, "GET", "/v2/models/nocard", "", nil); r.code != 200 || strings.Contains(string(r.body), "parameters") {
		t.Errorf("model metadata without a card: %d %s", r.code, r.body)
	}
	for _, p := range []string{"/v2/models/mlp/ready", "/v2/models/mlp/versions/1/ready", "/v2/health/ready", "/ping", "/health"} {
		if r := ts.do(t, "GET", p, "", nil); r.code != 200 {
			t.Errorf("%s: %d", p, r.code)
		}
	}
	if r := ts.do(t, "GET", "/v2/models/mlp/versions/2/ready", "", nil); r.code != 404 {
		t.Errorf("unknown version 2 ready: %d", r.code)
	}

	// OIP: id from the body wins over X-Request-ID; parameters accepted.
	req := refRequest()
	req["id"] = "body-id"
	req["parameters"] = map[string]any{"date": "2026-01-02"}
	b, _ := json.Marshal(req)
	r = ts.do(t, "POST", "/v2/models/mlp/infer", "application/json", b, "X-Request-ID", "hdr-id")
	var out struct {
		ModelName, ModelVersion, ID string `json:"-"`
		Name                        string `json:"model_name"`
		Version                     string `json:"model_version"`
		RID                         string `json:"id"`
		Outputs                     []struct {
			Name  string
			Shape []int64
			Data  []float32
		}
	}
	if err := json.Unmarshal(r.body, &out); err != nil || r.code != 200 {
		t.Fatalf("infer: %d %s", r.code, r.body)
	}
	if out.RID != "body-id" || r.header.Get("X-Request-ID") != "body-id" || out.Name != "mlp" || out.Version != "1" {
		t.Errorf("echo: %+v header %q", out, r.header.Get("X-Request-ID"))
	}
	for i, v := range testmodel.MLPSmallReference {
		if math.Abs(float64(out.Outputs[0].Data[i]-v)) > 1e-6 {
			t.Errorf("probabilities %v, want %v", out.Outputs[0].Data, testmodel.MLPSmallReference)
		}
	}
	// X-Request-ID is echoed when the body has no id.
	b, _ = json.Marshal(refRequest())
	r = ts.do(t, "POST", "/v2/models/mlp/versions/1/infer", "application/json", b, "X-Request-ID", "hdr-id")
	if r.header.Get("X-Request-ID") != "hdr-id" || !strings.Contains(string(r.body), `"id":"hdr-id"`) {
		t.Errorf("X-Request-ID not echoed: %s %v", r.body, r.header)
	}

	// MLflow: every format gives the same prediction.
	row := testmodel.ReferenceRow(16)
	cols := make([]string, 16)
	rec1 := map[string]any{}
	for i := range cols {
		cols[i] = fmt.Sprintf("f%d", i)
		rec1[cols[i]] = row[i]
	}
	// dataframe_split with columns in reverse order: the card's order wins.
	revCols := make([]string, 16)
	revRow := make([]any, 16)
	for i := range revCols {
		revCols[i] = cols[15-i]
		revRow[i] = row[15-i]
	}
	rowJSON, _ := json.Marshal(row)
	mlflow := []struct{ name, path, body string }{
		{"dataframe_split", "/invocations?model=mlp", mustJSON(map[string]any{"dataframe_split": map[string]any{"columns": revCols, "data": [][]any{revRow}}})},
		{"dataframe_records", "/invocations?model=mlp", mustJSON(map[string]any{"dataframe_records": []any{rec1}})},
		{"instances rows", "/invocations?model=mlp", `{"instances":[` + string(rowJSON) + `]}`},
		{"instances records", "/invocations?model=mlp", mustJSON(map[string]any{"instances": []any{rec1}})},
		{"inputs array", "/invocations?model=mlp", `{"inputs":[` + string(rowJSON) + `]}`},
		{"inputs by name", "/invocations?model=mlp", `{"inputs":{"input":[` + string(rowJSON) + `]},"params":{"k":1}}`},
		{"no card", "/invocations?model=nocard", `{"instances":[` + string(rowJSON) + `]}`},
		{"split without columns", "/invocations?model=nocard", `{"dataframe_split":{"data":[` + string(rowJSON) + `]}}`},
	}
	for _, c := range mlflow {
		r := ts.do(t, "POST", c.path, "application/json", []byte(c.body))
		var p struct{ Predictions [][]float32 }
		if err := json.Unmarshal(r.body, &p); err != nil || r.code != 200 || len(p.Predictions) != 1 {
			t.Errorf("%s: %d %s", c.name, r.code, r.body)
			continue
		}
		for i, v := range testmodel.MLPSmallReference {
			if math.Abs(float64(p.Predictions[0][i]-v)) > 1e-6 {
				t.Errorf("%s: %v", c.name, p.Predictions)
			}
		}
	}
	if r := ts.do(t, "GET", "/version", "", nil); r.code != 200 || string(r.body) != "test" {
		t.Errorf("/version: %d %s", r.code, r.body)
	}

	// Observers saw every successful prediction with its id and parameters.
	rec.mu.Lock()
	n := len(rec.obs)
	first := rec.obs[0]
	rec.mu.Unlock()
	if n != 2+len(mlflow) {
		t.Errorf("%d observations, want %d", n, 2+len(mlflow))
	}
	if first.RequestID != "body-id" || first.Parameters["date"] != "2026-01-02" || first.Model != "mlp" || first.Version != 1 ||
		first.Card == nil || len(first.Inputs) != 1 || len(first.Outputs) != 1 || first.Protocol != "oip" {
		t.Errorf("observation %+v", first)
	}

	// Metrics: counters by model/version, routes by pattern, lint clean.
	r = ts.do(t, "GET", "/metrics", "", nil)
	for _, s := range []string{
		`flywheel_http_requests_total{code="200",method="POST",route="/v2/models/:model/infer"}`,
		`flywheel_model_version_ready{model="mlp",version="1"} 1`,
		`flywheel_model_version_state{model="mlp",state="READY",version="1"} 1`,
		`flywheel_model_load_attempts_total{model="mlp",outcome="success"} 1`,
		`flywheel_inference_rows_total{model="mlp",version="1"}`,
		`flywheel_inference_requests_total{model="mlp",outcome="success",version="1"}`,
		`flywheel_inference_executions_total{model="mlp",version="1"}`,
		`flywheel_inference_compute_duration_seconds_bucket{model="mlp",version="1",le="1e-05"}`,
	} {
		if !strings.Contains(string(r.body), s) {
			t.Errorf("/metrics lacks %s", s)
		}
	}
	problems, err := testutil.GatherAndLint(ts.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric lint: %s: %s", p.Metric, p.Text)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
