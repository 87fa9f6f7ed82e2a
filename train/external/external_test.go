package external

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/train/pipeline"
)

// writeLinearCSV writes y = 2a - b + 5 over n days.
func writeLinearCSV(t *testing.T, path string, n int) {
	t.Helper()
	var b strings.Builder
	b.WriteString("date,a,b,y\n")
	d := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		a, c := float64(i%7), float64(i%5)*1.5
		fmt.Fprintf(&b, "%s,%g,%g,%g\n", d.AddDate(0, 0, i).Format("2006-01-02"), a, c, 2*a-c+5)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fitLinear(t *testing.T, dir string) (string, *bytes.Buffer) {
	t.Helper()
	data := filepath.Join(dir, "train.csv")
	writeLinearCSV(t, data, 60)
	out := filepath.Join(dir, "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	tr := &Trainer{Command: []string{"/usr/bin/python3", "testdata/linear_trainer.py"}, Timeout: time.Minute}
	champ := &modelrepo.Card{Name: "m", Version: 1, Inputs: []modelrepo.Tensor{{Name: "features"}}, Outputs: []modelrepo.Tensor{{Name: "prediction"}}}
	err := tr.Fit(context.Background(), pipeline.FitRequest{Dataset: data, OutputDir: out, Model: "m", Features: []string{"a", "b"}, Target: "y",
		Algorithm: "linear", Params: map[string]any{"l2": 0}, Champion: champ, Log: &log})
	if err != nil {
		t.Fatalf("fit: %v\n%s", err, log.String())
	}
	return out, &log
}

// TestPythonTrainer runs a real Python trainer and runs its model with ONNX Runtime.
func TestPythonTrainer(t *testing.T) {
	if _, _, err := ort.Setup(""); err != nil {
		t.Fatal(err)
	}
	out, log := fitLinear(t, t.TempDir())
	if !strings.Contains(log.String(), "training linear model on 60 rows x 2 features") {
		t.Errorf("log not captured:\n%s", log)
	}
	c, err := modelrepo.LoadCard(filepath.Join(out, modelrepo.CardFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.FeatureNames(); len(got) != 2 || got[0] != "a" {
		t.Errorf("features = %v", got)
	}
	pred, err := pipeline.ONNXPredictor{}.Predict(context.Background(), out, c, [][]float64{{1, 0}, {3, 3}})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []float64{7, 8} {
		if math.Abs(pred[i]-want) > 1e-3 {
			t.Errorf("prediction %d = %v, want %v", i, pred[i], want)
		}
	}
}

func TestContractFailures(t *testing.T) {
	dir := t.TempDir()
	src, _ := fitLinear(t, dir)
	data := filepath.Join(dir, "train.csv")
	t.Setenv("FLYWHEEL_TOKEN", "must-not-leak")
	t.Setenv("MLFLOW_TRACKING_TOKEN", "must-not-leak")
	for _, tc := range []struct {
		mode    string
		timeout time.Duration
		wantErr string
		wantLog string
	}{
		{"ok", time.Minute, "", "dataset " + data + " has 60 rows"},
		{"fail", time.Minute, `exit status 7 (last output: "boom: out of memory")`, `params {"l2":0.5}`},
		{"nothing", time.Minute, "did not write model.onnx", ""},
		{"sleep", 300 * time.Millisecond, "timed out after 300ms", ""},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			out := t.TempDir()
			var log bytes.Buffer
			tr := &Trainer{Command: []string{"/bin/sh", "testdata/copy_trainer.sh"}, Timeout: tc.timeout,
				Env: []string{"MODE=" + tc.mode, "LEAK_CHECK=1", "MODEL_SRC=" + filepath.Join(src, "model.onnx"), "CARD_SRC=" + filepath.Join(src, "model.json")}}
			start := time.Now()
			err := tr.Fit(context.Background(), pipeline.FitRequest{Dataset: data, OutputDir: out, Params: map[string]any{"l2": 0.5}, Log: &log})
			if time.Since(start) > 10*time.Second {
				t.Errorf("took %s", time.Since(start))
			}
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err = %v, want %q\nlog:\n%s", err, tc.wantErr, log.String())
			}
			if !strings.Contains(log.String(), tc.wantLog) {
				t.Errorf("log = %q, want %q", log.String(), tc.wantLog)
			}
		})
	}
	if err := (&Trainer{}).Fit(context.Background(), pipeline.FitRequest{}); err == nil {
		t.Error("no command must fail")
	}
}
