package api_test

import (
	"bytes"
	"compress/gzip"
	"strconv"
	"strings"
	"testing"

	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/repository"
	"github.com/flywheel-ml/flywheel/server/testmodel"
)

func gzipBomb(t *testing.T, size int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for n := 0; n < size; n += len(zeros) {
		_, _ = w.Write(zeros)
	}
	_ = w.Close()
	return buf.Bytes()
}

// TestCompressedBodyCappedWhileInflating: a gzip body that inflates far
// past the body limit gets 413 naming the limit on infer and /invocations,
// before it is inflated whole; the next request is served.
func TestCompressedBodyCappedWhileInflating(t *testing.T) {
	root := t.TempDir()
	writeVersion(t, root, "mlp", 1, map[string][]byte{"model.onnx": testmodel.MLPSmall(), "model.json": mlpCard("mlp", 1)})
	ts := startServer(t, root, func(_ *repository.Config, o *api.Options) { o.Config.BodyLimit = 1 << 20 })
	bomb := gzipBomb(t, 256<<20) // 256 KiB on the wire, 256 MiB inflated
	for _, path := range []string{"/v2/models/mlp/infer", "/invocations?model=mlp"} {
		r := ts.do(t, "POST", path, "application/json", bomb, "Content-Encoding", "gzip")
		if r.code != 413 || !strings.Contains(string(r.body), "more than the limit of 1048576 bytes") {
			t.Errorf("%s gzip bomb: %d %s, want 413 naming the limit", path, r.code, r.body)
		}
	}
	var small bytes.Buffer
	w := gzip.NewWriter(&small)
	_, _ = w.Write([]byte(`{"inputs":[{"name":"input","shape":[1,16],"datatype":"FP32","data":[` + strings.Repeat("0.5,", 15) + `0.5]}]}`))
	_ = w.Close()
	if r := ts.do(t, "POST", "/v2/models/mlp/infer", "application/json", small.Bytes(), "Content-Encoding", "gzip"); r.code != 200 {
		t.Fatalf("gzip request within the limit: %d %s", r.code, r.body)
	}
}

// TestRepositoryWritesNeedToken: without --admin-token (and without
// --insecure-admin) load/unload answer 403 and leave the model served; with
// a token, the scheme is case-insensitive.
func TestRepositoryWritesNeedToken(t *testing.T) {
	root := t.TempDir()
	writeVersion(t, root, "mlp", 1, map[string][]byte{"model.onnx": testmodel.MLPSmall(), "model.json": mlpCard("mlp", 1)})
	open := startServer(t, root)
	if r := open.do(t, "POST", "/v2/repository/models/mlp/unload", "", nil); r.code != 403 || !strings.Contains(string(r.body), "--admin-token") {
		t.Fatalf("anonymous unload without a token configured: %d %s, want 403", r.code, r.body)
	}
	if r := open.post(t, "/v2/models/mlp/infer", refRequest()); r.code != 200 {
		t.Fatalf("infer after refused unload: %d %s", r.code, r.body)
	}
	tok := startServer(t, root, func(_ *repository.Config, o *api.Options) { o.Config.AdminToken = "s3cret" })
	for _, h := range []string{"bearer s3cret", "BEARER s3cret"} {
		if r := tok.do(t, "POST", "/v2/repository/models/mlp/load", "", nil, "Authorization", h); r.code != 200 {
			t.Errorf("load with %q: %d %s", h, r.code, r.body)
		}
	}
	insecure := startServer(t, root, func(_ *repository.Config, o *api.Options) { o.Config.InsecureAdmin = true })
	if r := insecure.do(t, "POST", "/v2/repository/models/mlp/load", "", nil); r.code != 200 {
		t.Errorf("load with --insecure-admin: %d %s", r.code, r.body)
	}
}

// TestRequestIDsUnguessable: generated request ids (the keys of logged
// predictions) are a 10-character time prefix and 128 random bits, not a
// prefix and a counter: after the time prefix consecutive ids share no
// prefix longer than chance allows; and ids sort by the time they were made
// (the prediction log's id index grows at its end).
func TestRequestIDsUnguessable(t *testing.T) {
	root := t.TempDir()
	writeVersion(t, root, "mlp", 1, map[string][]byte{"model.onnx": testmodel.MLPSmall(), "model.json": mlpCard("mlp", 1)})
	ts := startServer(t, root)
	const prefix = 10
	var prev string
	for i := 0; i < 20; i++ {
		r := ts.post(t, "/v2/models/mlp/infer", refRequest())
		id := r.header.Get("X-Request-ID")
		if r.code != 200 || len(id) != prefix+26 {
			t.Fatalf("infer: %d, id %q: want 200 and a time prefix + 26 base32 characters (128 random bits)", r.code, id)
		}
		if prev != "" {
			if id[:prefix] < prev[:prefix] {
				t.Fatalf("id %q made after %q sorts before it", id, prev)
			}
			common := 0
			for common < len(id)-prefix && id[prefix+common] == prev[prefix+common] {
				common++
			}
			if common > 6 {
				t.Fatalf("ids %q and %q share %d characters after the time prefix: guessable", prev, id, common)
			}
		}
		prev = id
	}
}

// TestModelDrivenOutputCapped: a model whose output size comes from the
// request (ConstantOfShape) asked for 10^8 elements answers 422 naming the
// cap, the server stays up, and a request within the cap is served.
func TestModelDrivenOutputCapped(t *testing.T) {
	root := t.TempDir()
	writeVersion(t, root, "cos", 1, map[string][]byte{"model.onnx": testmodel.ConstantOfShape()})
	ts := startServer(t, root, func(rc *repository.Config, _ *api.Options) { rc.Session.MaxOutputElements = 1 << 20 })
	req := func(n int) string {
		return `{"inputs":[{"name":"shape","shape":[2],"datatype":"INT64","data":[1,` + strconv.Itoa(n) + `]}]}`
	}
	r := ts.post(t, "/v2/models/cos/infer", req(100_000_000))
	if r.code != 422 || !strings.Contains(string(r.body), "more than the limit of 1048576") {
		t.Fatalf("10^8 elements: %d %.300s, want 422 naming the limit", r.code, r.body)
	}
	if r := ts.post(t, "/v2/models/cos/infer", req(1000)); r.code != 200 {
		t.Fatalf("1000 elements: %d %.300s", r.code, r.body)
	}
}
