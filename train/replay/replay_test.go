package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/server/oip"
)

// standIn answers OIP metadata and infer (prediction = sum of the features,
// version 2 from switchAt on) and records feedback.
type standIn struct {
	mu       sync.Mutex
	events   []string // "infer <id>" / "label <id>"
	labels   map[string]float64
	params   []string
	failDate string
	switchAt string
}

func (s *standIn) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/models/m", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"name":"m","versions":["1"],"platform":"onnxruntime_onnx","inputs":[{"name":"x","datatype":"FP32","shape":[-1,3]}]}`))
	})
	mux.HandleFunc("POST /v2/models/m/infer", func(w http.ResponseWriter, r *http.Request) {
		var req oip.InferenceRequest
		var x []float64
		err := json.NewDecoder(r.Body).Decode(&req)
		if err == nil && len(req.Inputs) == 1 {
			err = json.Unmarshal(req.Inputs[0].Data, &x)
		}
		if err != nil || len(req.Inputs) != 1 || req.Inputs[0].Name != "x" || req.Inputs[0].Shape[1] != int64(len(x)) {
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"error":"bad request %v"}`, err)
			return
		}
		date, _ := req.Parameters["date"].(string)
		s.mu.Lock()
		s.events = append(s.events, "infer "+req.ID)
		s.params = append(s.params, date)
		s.mu.Unlock()
		if date == s.failDate {
			w.WriteHeader(503)
			w.Write([]byte(`{"error":"model not ready"}`))
			return
		}
		sum := 0.0
		for _, v := range x {
			sum += v
		}
		v := "1"
		if s.switchAt != "" && date >= s.switchAt {
			v = "2"
		}
		fmt.Fprintf(w, `{"model_name":"m","model_version":%q,"id":%q,"outputs":[{"name":"y","shape":[1,1],"datatype":"FP32","data":[[%g]]}]}`, v, req.ID, sum)
	})
	mux.HandleFunc("POST /v1/feedback", func(w http.ResponseWriter, r *http.Request) {
		var ls []struct {
			ID    string
			Value float64
		}
		if err := json.NewDecoder(r.Body).Decode(&ls); err != nil || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(400)
			return
		}
		s.mu.Lock()
		for _, l := range ls {
			s.events = append(s.events, "label "+l.ID)
			s.labels[l.ID] = l.Value
		}
		s.mu.Unlock()
		fmt.Fprintf(w, `{"created":%d,"failed":0}`, len(ls))
	})
	return mux
}

func writeCSV(t *testing.T, days int) string {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("date,a,b,y\n")
	d0 := time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < days; i++ {
		fmt.Fprintf(&b, "%s,%d,%d,%d\n", d0.AddDate(0, 0, i).Format(DateLayout), i, 1, i+2) // prediction a+b+dow-ish, label a+2
	}
	p := filepath.Join(t.TempDir(), "d.csv")
	os.WriteFile(p, b.Bytes(), 0o644)
	return p
}

// sumFeatures is a feature function: the raw values in name order plus a constant.
func sumFeatures(v map[string]float64, _ time.Time) ([]float64, error) {
	return []float64{v["a"], v["b"], 0}, nil
}

func TestReplay(t *testing.T) {
	rows, err := ReadCSV(writeCSV(t, 40), "date", "y")
	if err != nil {
		t.Fatal(err)
	}
	s := &standIn{labels: map[string]float64{}, failDate: "2015-01-05", switchAt: "2015-01-11"}
	srv := httptest.NewServer(s.handler())
	defer srv.Close()
	cfg := DefaultConfig()
	cfg.ServeURL, cfg.Model = srv.URL, "m"
	cfg.From = time.Date(2015, 1, 3, 0, 0, 0, 0, time.UTC)
	cfg.Until = time.Date(2015, 1, 30, 0, 0, 0, 0, time.UTC)
	cfg.MaxRequests = 15
	cfg.DaysPerSecond = 50
	cfg.LabelDelay = 2
	cfg.ProgressEvery = 100 * time.Millisecond
	var observed []Prediction
	cfg.Observe = func(p Prediction) { observed = append(observed, p) }
	var progress bytes.Buffer
	r, err := New(cfg, rows, sumFeatures, &progress)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	st, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	// 15 requests + 2 ticks to flush labels at 50/s ≈ 0.34 s.
	if el < 250*time.Millisecond || el > 5*time.Second {
		t.Errorf("replay took %s; the speed is not honoured", el)
	}
	if st.Sent != 15 || st.Failed != 1 || st.Labels != 14 || st.LabelsFailed != 0 || st.First != "2015-01-03" || st.Last != "2015-01-17" {
		t.Errorf("stats = %+v", st)
	}
	if len(st.FirstFailures) != 1 || !strings.Contains(st.FirstFailures[0], "2015-01-05: 503 Service Unavailable") {
		t.Errorf("failures = %v", st.FirstFailures)
	}
	// v1 predicts a+b = a+1 against a+2: MAE 1; so does v2.
	if v1, v2 := st.Versions["1"], st.Versions["2"]; v1 == nil || v2 == nil || v1.Requests != 7 || v2.Requests != 7 || math.Abs(v1.MAE()-1) > 1e-9 || v2.Labelled != 7 {
		t.Errorf("versions = %+v %+v", v1, v2)
	}
	// Observe sees every answered request with its version.
	if len(observed) != 14 || observed[0].Version != "1" || observed[13].Version != "2" || observed[0].Date.Format(DateLayout) != "2015-01-03" ||
		math.Abs(observed[0].Label-observed[0].Prediction-1) > 1e-9 {
		t.Errorf("observed %d: %+v … %+v", len(observed), observed[0], observed[len(observed)-1])
	}
	// A label is posted only after the prediction LabelDelay days later.
	pos := map[string]int{}
	for i, e := range s.events {
		pos[e] = i
	}
	for day := 3; day <= 15; day++ {
		id := fmt.Sprintf("replay-2015-01-%02d", day)
		if day == 5 {
			if _, ok := s.labels[id]; ok {
				t.Error("a label was posted for a failed prediction")
			}
			continue
		}
		later := fmt.Sprintf("infer replay-2015-01-%02d", day+2)
		if pos["label "+id] < pos[later] {
			t.Errorf("label %s posted before %s", id, later)
		}
		if s.labels[id] != float64(day-1+2) {
			t.Errorf("label %s = %v", id, s.labels[id])
		}
	}
	if s.params[0] != "2015-01-03" {
		t.Errorf("date parameter = %q", s.params[0])
	}
	if !strings.Contains(progress.String(), "replay done 2015-01-17 sent 15 failed 1 labels 14") || !strings.Contains(progress.String(), "| v2 requests 7 mae 1.000") {
		t.Errorf("progress = %s", progress.String())
	}
}

func TestReplayStopsOnCancel(t *testing.T) {
	rows, _ := ReadCSV(writeCSV(t, 400), "date", "y")
	s := &standIn{labels: map[string]float64{}}
	srv := httptest.NewServer(s.handler())
	defer srv.Close()
	cfg := DefaultConfig()
	cfg.ServeURL, cfg.Model, cfg.InputName, cfg.DaysPerSecond = srv.URL, "m", "x", 20
	r, _ := New(cfg, rows, sumFeatures, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	st, err := r.Run(ctx)
	if err != nil || st.Sent < 3 || st.Sent > 10 {
		t.Errorf("after cancel: %+v, %v", st, err)
	}
}

func TestConfigAndCSVErrors(t *testing.T) {
	bad := Config{DaysPerSecond: 0, LabelDelay: -1, MaxRequests: -1, From: time.Now(), Until: time.Now().Add(-time.Hour)}
	err := bad.Validate()
	for _, want := range []string{"serve URL is empty", "model is empty", "days per second 0", "label delay -1", "max requests -1", "until", "timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want %q", err, want)
		}
	}
	dir := t.TempDir()
	for name, body := range map[string]string{"nocol": "date,a\n2015-01-01,1\n", "baddate": "date,y\n15/01/01,1\n", "badnum": "date,y\n2015-01-01,x\n"} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		if _, err := ReadCSV(p, "date", "y"); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
