package api_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-ml/flywheel/internal/benchmodels"
)

// TestBatchingNeverChangesAnswers serves the same real ONNX model twice,
// once behind the dynamic batcher (config.yaml) and once without, sends
// both the same random concurrent traffic with mixed batch sizes over HTTP,
// and requires identical answers, and that the batcher did merge requests.
func TestBatchingNeverChangesAnswers(t *testing.T) {
	spec, err := benchmodels.Lookup("mlp_small")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	onnx := spec.Bytes()
	writeVersion(t, root, "plain", 1, map[string][]byte{"model.onnx": onnx})
	writeVersion(t, root, "batched", 1, map[string][]byte{"model.onnx": onnx})
	// A queue delay makes merging certain even on a quiet machine.
	writeConfig(t, root, "batched", "dynamic_batching:\n  max_batch_size: 16\n  max_queue_delay_microseconds: 2000\n  instances: 2\n")
	ts := startServer(t, root)

	const clients, perClient = 12, 25
	type answer struct{ plain, batched string }
	answers := make([][]answer, clients)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for range perClient {
				rows := 1 + rng.IntN(5)
				data := make([]float32, rows*spec.Features)
				for i := range data {
					data[i] = rng.Float32()*4 - 2
				}
				body, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{
					"name": spec.Input, "datatype": "FP32", "shape": []int{rows, spec.Features}, "data": data}}})
				var a answer
				for _, m := range []string{"plain", "batched"} {
					r := ts.post(t, "/v2/models/"+m+"/infer", body)
					if r.code != 200 {
						t.Errorf("%s: %d %s", m, r.code, r.body)
						return
					}
					var out struct {
						Outputs []struct {
							Shape []int           `json:"shape"`
							Data  json.RawMessage `json:"data"`
						} `json:"outputs"`
					}
					if err := json.Unmarshal(r.body, &out); err != nil || len(out.Outputs) != 1 || out.Outputs[0].Shape[0] != rows {
						t.Errorf("%s: %v %s", m, err, r.body)
						return
					}
					s := fmt.Sprint(out.Outputs[0].Shape, string(out.Outputs[0].Data))
					if m == "plain" {
						a.plain = s
					} else {
						a.batched = s
					}
				}
				answers[c] = append(answers[c], a)
			}
		}()
	}
	wg.Wait()
	n := 0
	for c := range answers {
		for i, a := range answers[c] {
			n++
			if a.plain != a.batched {
				t.Fatalf("client %d request %d: batched answer differs\nplain:   %s\nbatched: %s", c, i, a.plain, a.batched)
			}
		}
	}
	if n != clients*perClient {
		t.Fatalf("%d answers, want %d", n, clients*perClient)
	}
	ex := testutil.ToFloat64(ts.m.Executions.WithLabelValues("batched", "1"))
	plainEx := testutil.ToFloat64(ts.m.Executions.WithLabelValues("plain", "1"))
	t.Logf("%d requests: %v session runs batched, %v plain", n, ex, plainEx)
	if ex >= float64(n) || plainEx != float64(n) {
		t.Fatalf("batched model ran %v sessions for %d requests (plain %v): no merging", ex, n, plainEx)
	}
	if !strings.Contains(string(ts.do(t, "GET", "/metrics", "", nil).body), `flywheel_inference_executions_total{model="batched",version="1"}`) {
		t.Fatal("no executions metric")
	}
}
