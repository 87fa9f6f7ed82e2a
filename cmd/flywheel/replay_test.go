package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/train/pipeline"
	"github.com/flywheel-ml/flywheel/train/replay"
)

// TestReplayCommand replays the fixture's data against a stand-in serve that
// runs the champion's model.onnx with ONNX Runtime.
func TestReplayCommand(t *testing.T) {
	if _, _, err := ort.Setup(""); err != nil {
		t.Fatal(err)
	}
	f := newLoopFixture(t)
	dir := filepath.Join(f.models, "ridership", "1")
	c, err := modelrepo.LoadCard(filepath.Join(dir, modelrepo.CardFile))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	labels := 0
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/models/ridership", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"name":"ridership","inputs":[{"name":%q}]}`, c.Inputs[0].Name)
	})
	mux.HandleFunc("POST /v2/models/ridership/infer", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID     string
			Inputs []struct{ Data []float64 }
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			w.WriteHeader(400)
			return
		}
		pred, err := pipeline.ONNXPredictor{}.Predict(r.Context(), dir, c, [][]float64{req.Inputs[0].Data})
		if err != nil {
			w.WriteHeader(500)
			fmt.Fprintf(w, `{"error":%q}`, err.Error())
			return
		}
		fmt.Fprintf(w, `{"model_name":"ridership","model_version":"1","id":%q,"outputs":[{"name":"prediction","shape":[1,1],"datatype":"FP32","data":[%g]}]}`, req.ID, pred[0])
	})
	mux.HandleFunc("POST /v1/feedback", func(w http.ResponseWriter, r *http.Request) {
		var ls []map[string]any
		json.NewDecoder(r.Body).Decode(&ls)
		mu.Lock()
		labels += len(ls)
		mu.Unlock()
		w.Write([]byte(`{"failed":0}`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	var out, progress bytes.Buffer
	err = runReplay(context.Background(), []string{"--serve-url", srv.URL, "--data", f.base, "--target", "y", "--features", "columns", "--from", "2020-06-01",
		"--until", "2020-12-31", "--max-requests", "30", "--speed", "200", "--label-delay", "1", "--json"}, &out, &progress)
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, progress.String())
	}
	var st replay.Stats
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	v1 := st.Versions["1"]
	if st.Sent != 30 || st.Failed != 0 || st.Labels != 30 || labels != 30 || v1 == nil || v1.MAE() > 1 || st.First != "2020-06-01" {
		t.Errorf("stats = %s", out.String())
	}
	t.Logf("replayed %d days, v1 live mae %.3f", st.Sent, v1.MAE())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", "yesterday"}, "--from"},
		{[]string{"--speed", "0"}, "days per second 0"},
		{[]string{"--serve-url", srv.URL, "--data", "/nonexistent.csv"}, "no such file"},
	} {
		if err := runReplay(context.Background(), tc.args, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
