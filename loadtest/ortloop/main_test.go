package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/server/testmodel"
)

func TestRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mlp_small", "1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(model, testmodel.MLPSmall(), 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	c := config{model: model, batch: 8, goroutines: 2, duration: 100 * time.Millisecond, warmup: 10 * time.Millisecond}
	if err := run(c, &out); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^RESULT model=mlp_small/model.onnx batch=8 goroutines=2 calls=(\d+) rows_per_s=(\d+) call_p50_us=[0-9.]+\n$`).
		FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("output %q", out.String())
	}
	calls, _ := strconv.Atoi(m[1])
	rps, _ := strconv.Atoi(m[2])
	if calls < 2 || rps < 8*calls/2 { // at least one call per goroutine in ~0.1 s
		t.Errorf("calls %d, rows/s %d", calls, rps)
	}
}

func TestRunRejects(t *testing.T) {
	// a model with two inputs and three outputs, from onnxruntime_go's test data
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/yalue/onnxruntime_go").Output()
	if err != nil {
		t.Fatal(err)
	}
	notMLP := filepath.Join(strings.TrimSpace(string(out)), "test_data", "example_several_inputs_and_outputs.onnx")
	ok := config{model: notMLP, batch: 1, goroutines: 1, duration: time.Second}
	tests := []struct {
		name string
		edit func(*config)
		want string
	}{
		{"no model", func(c *config) { c.model = "" }, "-model is required"},
		{"batch 0", func(c *config) { c.batch = 0 }, "-batch 0"},
		{"long run", func(c *config) { c.duration = time.Hour }, "-duration 1h0m0s"},
		{"missing file", func(c *config) { c.model += ".missing" }, "reading"},
		{"wrong signature", func(c *config) {}, "want one FP32 input [N,F]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := run(c, &strings.Builder{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
}
