package ort

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flywheel-ml/flywheel/server/tensor"
	"github.com/flywheel-ml/flywheel/server/testmodel"
)

func TestSessionMLPSmall(t *testing.T) {
	if _, _, err := Setup(""); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "model.onnx")
	os.WriteFile(p, testmodel.MLPSmall(), 0o644)
	base := LiveSessions()
	s, err := NewSession(p, DefaultSessionOptions())
	if err != nil {
		t.Fatal(err)
	}
	if LiveSessions() != base+1 {
		t.Fatalf("live %d", LiveSessions())
	}
	in := s.Inputs()
	if len(in) != 1 || in[0].Name != "input" || in[0].DataType != tensor.FP32 || in[0].Shape[0] != -1 || in[0].Shape[1] != 16 {
		t.Fatalf("inputs %+v", in)
	}
	row := testmodel.ReferenceRow(16)
	out, err := s.Run(context.Background(), []tensor.Tensor{{Name: "input", DataType: tensor.FP32, Shape: []int64{1, 16}, Data: row}})
	if err != nil {
		t.Fatal(err)
	}
	got := out[0].Data.([]float32)
	for i, w := range testmodel.MLPSmallReference {
		if math.Abs(float64(got[i]-w)) > 1e-6 {
			t.Fatalf("got %v want %v", got, testmodel.MLPSmallReference)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Run(ctx, []tensor.Tensor{{Name: "input", DataType: tensor.FP32, Shape: []int64{1, 16}, Data: row}}); err == nil {
		t.Error("run with a cancelled context succeeded")
	}
	if _, err := s.Run(context.Background(), nil); err == nil {
		t.Error("run without inputs succeeded")
	}
	if _, err := s.Run(context.Background(), []tensor.Tensor{{Name: "input", DataType: tensor.FP32, Shape: []int64{2, 16}, Data: row}}); err == nil {
		t.Error("short data accepted")
	}
	s.Close()
	s.Close()
	if LiveSessions() != base {
		t.Fatalf("live %d after close", LiveSessions())
	}
}

func TestNewSessionErrors(t *testing.T) {
	if _, _, err := Setup(""); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.onnx")
	garbage := filepath.Join(dir, "garbage.onnx")
	os.WriteFile(empty, nil, 0o644)
	os.WriteFile(garbage, []byte("\x08\x07garbage"), 0o644)
	cases := []struct {
		name, path string
		opts       SessionOptions
		want       string
	}{
		{"missing", filepath.Join(dir, "none.onnx"), DefaultSessionOptions(), "no such file"},
		{"empty", empty, DefaultSessionOptions(), "is empty"},
		{"garbage", garbage, DefaultSessionOptions(), "signature"},
		{"bad level", garbage, SessionOptions{GraphOptimization: "max"}, ""},
	}
	base := LiveSessions()
	for _, c := range cases {
		_, err := NewSession(c.path, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	if LiveSessions() != base {
		t.Errorf("failed loads leaked sessions: %d", LiveSessions()-base)
	}
	if err := (SessionOptions{IntraOpThreads: -1}).Validate(); err == nil {
		t.Error("negative threads accepted")
	}
}
