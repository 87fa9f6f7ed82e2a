package ort

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flywheel-ml/flywheel/server/tensor"
	"github.com/flywheel-ml/flywheel/server/testmodel"
)

// TestMemoryLimitConstantOfShape: with LimitMemory, a ConstantOfShape
// request for more bytes than the cap fails inside ONNX Runtime with
// ErrMemoryLimit naming the limit and the flag, the process does not take
// that memory, and a normal request afterwards succeeds (issue 15 defect 2).
func TestMemoryLimitConstantOfShape(t *testing.T) {
	if _, _, err := Setup(""); err != nil {
		t.Fatal(err)
	}
	const limit = 256 << 20
	if err := LimitMemory(limit); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "model.onnx")
	os.WriteFile(p, testmodel.ConstantOfShape(), 0o644)
	opts := DefaultSessionOptions()
	opts.MaxOutputElements = 0
	s, err := NewSession(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	run := func(a, b int64) ([]tensor.Tensor, error) {
		return s.Run(context.Background(), []tensor.Tensor{{Name: "shape", DataType: tensor.Int64, Shape: []int64{2}, Data: []int64{a, b}}})
	}
	before := peakRSS(t)
	for _, n := range []int64{1e5, 1e6} { // 4e8 and 4e9 bytes of FP32
		_, err := run(1000, n)
		if !errors.Is(err, ErrMemoryLimit) || !strings.Contains(err.Error(), "268435456") || !strings.Contains(err.Error(), "--ort-max-memory") {
			t.Fatalf("1000x%d: err %v, want the memory limit", n, err)
		}
	}
	if grew := peakRSS(t) - before; grew > 100<<20 {
		t.Errorf("peak RSS grew by %d MiB", grew>>20)
	}
	out, err := run(10, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if d := out[0].Data.([]float32); len(d) != 10000 {
		t.Fatalf("got %d elements", len(d))
	}
}

// peakRSS returns the process's peak resident set (VmHWM) in bytes.
func peakRSS(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			var kb int64
			for _, c := range f[1] {
				kb = kb*10 + int64(c-'0')
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

func TestRequestedBytes(t *testing.T) {
	for msg, want := range map[string]int64{
		"bfc_arena.cc:358 Available memory of 268435456 is smaller than requested bytes of 400000000\nmore": 400000000,
		"Failed to allocate memory": -1,
	} {
		n, ok := requestedBytes(errors.New(msg))
		if (want < 0) == ok || (ok && n != want) {
			t.Errorf("%q: %d %v, want %d", msg, n, ok, want)
		}
	}
}
