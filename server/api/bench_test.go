package api_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/flywheel-ml/flywheel/server/oip"
	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/server/testmodel"
)

// BenchmarkDecodeRunEncodeMLPSmall measures one row through the request
// path without HTTP: OIP JSON decode → ONNX Runtime run → JSON encode.
func BenchmarkDecodeRunEncodeMLPSmall(b *testing.B) {
	setupORT(b)
	p := filepath.Join(b.TempDir(), "model.onnx")
	if err := os.WriteFile(p, testmodel.MLPSmall(), 0o644); err != nil {
		b.Fatal(err)
	}
	s, err := ort.NewSession(p, ort.DefaultSessionOptions())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	body, _ := json.Marshal(refRequest())
	dec := oip.Decoder{Inputs: s.Inputs(), Outputs: s.Outputs()}
	ctx := context.Background()
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req, err := dec.Decode(body)
		if err != nil {
			b.Fatal(err)
		}
		outs, err := s.Run(ctx, req.Inputs)
		if err != nil {
			b.Fatal(err)
		}
		if buf, err = oip.AppendResponse(buf[:0], oip.Response{Model: "mlp_small", Version: "1", ID: req.ID, Outputs: outs}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHTTPInferMLPSmall is the same row through the HTTP server on
// loopback (one client connection, sequential requests).
func BenchmarkHTTPInferMLPSmall(b *testing.B) {
	root := b.TempDir()
	writeVersion(b, root, "mlp_small", 1, map[string][]byte{"model.onnx": testmodel.MLPSmall()})
	ts := startServer(b, root)
	body, _ := json.Marshal(refRequest())
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := ts.do(b, "POST", "/v2/models/mlp_small/infer", "application/json", body); r.code != 200 {
			b.Fatal(r.code)
		}
	}
}
