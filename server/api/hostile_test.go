package api_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/ort"
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

// TestModelDrivenOutputMemoryCapped: 10^9 FP32 elements (4 GB) are more
// than ONNX Runtime's memory cap (--ort-max-memory, 1 GiB): the run fails
// inside ONNX Runtime before the memory is taken or copied into Go, the
// answer is 422 naming the limit and the flag, the process's peak RSS stays
// far below 4 GB, and a normal request afterwards is served (issue 15
// defect 2).
func TestModelDrivenOutputMemoryCapped(t *testing.T) {
	root := t.TempDir()
	writeVersion(t, root, "cos", 1, map[string][]byte{"model.onnx": testmodel.ConstantOfShape()})
	ts := startServer(t, root, func(rc *repository.Config, _ *api.Options) { rc.Session.MaxOutputElements = 0 })
	if ort.MemoryLimit() != ort.DefaultMaxMemory {
		t.Fatalf("memory limit %d", ort.MemoryLimit())
	}
	r := ts.post(t, "/v2/models/cos/infer", `{"inputs":[{"name":"shape","shape":[2],"datatype":"INT64","data":[1000,1000000]}]}`)
	want := fmt.Sprintf("limit of %d bytes (--ort-max-memory)", ort.DefaultMaxMemory)
	if r.code != 422 || !strings.Contains(string(r.body), want) {
		t.Fatalf("10^9 elements: %d %.400s, want 422 naming %q", r.code, r.body, want)
	}
	if peak := harness.ProcStatus(t, 0, "VmHWM:"); peak > 2<<30 {
		t.Errorf("peak RSS %d MiB: the 4 GB output was allocated", peak>>20)
	}
	if r := ts.post(t, "/v2/models/cos/infer", `{"inputs":[{"name":"shape","shape":[2],"datatype":"INT64","data":[1,1000]}]}`); r.code != 200 {
		t.Fatalf("1000 elements: %d %.300s", r.code, r.body)
	}
}

// versionState returns the state and reason of model/version in the index.
func versionState(ts *testServer, model string, version int64) (string, string) {
	for _, vi := range ts.repo.Index() {
		if vi.Model == model && vi.Version == version {
			return vi.State, vi.Reason
		}
	}
	return "", ""
}

// TestSpecialFilesRefused: model.onnx as a FIFO or a link to /dev/zero is
// refused at once (UNAVAILABLE naming it), without blocking the scan, the
// other models or shutdown; a model.json FIFO does not block either.
func TestSpecialFilesRefused(t *testing.T) {
	root := t.TempDir()
	writeVersion(t, root, "mlp", 1, map[string][]byte{"model.onnx": testmodel.MLPSmall()})
	for _, name := range []string{"fifo", "zero", "cardfifo"} {
		if err := os.MkdirAll(filepath.Join(root, name, "1"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(root, "fifo", "1", "model.onnx"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(root, "zero", "1", "model.onnx")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "cardfifo", "1", "model.onnx"), testmodel.MLPSmall(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "cardfifo", "1", "model.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan *testServer, 1)
	go func() { done <- startServer(t, root) }()
	var ts *testServer
	select {
	case ts = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the first scan blocked on a special file")
	}
	for _, model := range []string{"fifo", "zero"} {
		if st, reason := versionState(ts, model, 1); st != repository.StateUnavailable || !strings.Contains(reason, "not a regular file") {
			t.Errorf("%s: state %q reason %q, want UNAVAILABLE naming a non-regular file", model, st, reason)
		}
	}
	if r := ts.post(t, "/v2/models/mlp/infer", refRequest()); r.code != 200 {
		t.Fatalf("mlp beside the special files: %d %s", r.code, r.body)
	}
	// A new version of mlp still becomes ready (the reloader is not stuck).
	writeVersion(t, root, "mlp", 2, map[string][]byte{"model.onnx": testmodel.MLPSmall()})
	waitState(t, ts.repo, "mlp", 2, repository.StateReady, 15*time.Second)
}

// TestExternalDataInsideVersionFolder: external data beside model.onnx
// loads; a location escaping the folder is refused; a file that exists only
// in serve's working directory is not read.
func TestExternalDataInsideVersionFolder(t *testing.T) {
	root := t.TempDir()
	w := testmodel.WeightBytes([4]float32{1, 2, 3, 4})
	writeVersion(t, root, "beside", 1, map[string][]byte{"model.onnx": testmodel.ExternalData("weights.bin"), "weights.bin": w})
	writeVersion(t, root, "escape", 1, map[string][]byte{"model.onnx": testmodel.ExternalData("../../secret.bin")})
	if err := os.WriteFile(filepath.Join(root, "secret.bin"), testmodel.WeightBytes([4]float32{7, 7, 7, 7}), 0o644); err != nil {
		t.Fatal(err)
	}
	// The working directory holds a file the model names: it must not be read.
	cwd := t.TempDir()
	if err := os.WriteFile(filepath.Join(cwd, "cwd.bin"), testmodel.WeightBytes([4]float32{9, 9, 9, 9}), 0o644); err != nil {
		t.Fatal(err)
	}
	writeVersion(t, root, "cwd", 1, map[string][]byte{"model.onnx": testmodel.ExternalData("cwd.bin")})
	lib, err := ort.FindLibrary("") // before the working directory changes
	if err != nil {
		t.Fatal(err)
	}
	if lib, err = filepath.Abs(lib); err != nil {
		t.Fatal(err)
	}
	t.Setenv(ort.EnvVar, lib)
	t.Chdir(cwd)
	ts := startServer(t, root)
	req := `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0,0,0,0]}]}`
	if r := ts.post(t, "/v2/models/beside/infer", req); r.code != 200 || !strings.Contains(string(r.body), `"data":[1,2,3,4]`) {
		t.Errorf("external data beside model.onnx: %d %s, want [1,2,3,4]", r.code, r.body)
	}
	for _, model := range []string{"escape", "cwd"} {
		st, reason := versionState(ts, model, 1)
		if st != repository.StateUnavailable {
			t.Errorf("%s: state %q (%s), want UNAVAILABLE", model, st, reason)
		}
		if r := ts.post(t, "/v2/models/"+model+"/infer", req); r.code == 200 {
			t.Errorf("%s answered 200 %s: external data read from outside its version folder", model, r.body)
		}
	}
}

// TestModelLinkOutsideRepositoryRefused: a model folder that is a symlink
// leading outside the repository is not loaded (by a scan or by load); a
// link inside it is.
func TestModelLinkOutsideRepositoryRefused(t *testing.T) {
	outside := t.TempDir()
	writeVersion(t, outside, "elsewhere", 1, map[string][]byte{"model.onnx": testmodel.MLPSmall()})
	root := t.TempDir()
	writeVersion(t, root, "mlp", 1, map[string][]byte{"model.onnx": testmodel.MLPSmall()})
	if err := os.Symlink(filepath.Join(outside, "elsewhere"), filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("mlp", filepath.Join(root, "alias")); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, root, func(_ *repository.Config, o *api.Options) { o.Config.AdminToken = "tok" })
	if st, _ := versionState(ts, "escape", 1); st != "" {
		t.Errorf("model behind a link outside the repository: state %q, want not loaded", st)
	}
	if r := ts.do(t, "POST", "/v2/repository/models/escape/load", "", nil, "Authorization", "Bearer tok"); r.code != 404 || !strings.Contains(string(r.body), "outside the model repository") {
		t.Errorf("load escape: %d %s, want 404", r.code, r.body)
	}
	if r := ts.post(t, "/v2/models/alias/infer", refRequest()); r.code != 200 {
		t.Errorf("model behind a link inside the repository: %d %s", r.code, r.body)
	}
}
