package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/api"
	"github.com/flywheel-ml/flywheel/server/metrics"
	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/server/repository"
)

type testServer struct {
	srv  *api.Server
	repo *repository.Repository
	reg  *prometheus.Registry
	m    *metrics.Metrics
	url  string
	c    *http.Client
}

type serverOpt func(*repository.Config, *api.Options)

func setupORT(t testing.TB) {
	t.Helper()
	if _, _, err := ort.Setup(""); err != nil {
		t.Fatalf("ONNX Runtime: %v", err)
	}
	if err := ort.LimitMemory(ort.DefaultMaxMemory); err != nil { // as serve does
		t.Fatal(err)
	}
}

// startServer serves root on a loopback port with the real ONNX Runtime,
// a running watcher, and stops everything at the end of the test.
func startServer(t testing.TB, root string, opts ...serverOpt) *testServer {
	t.Helper()
	setupORT(t)
	rc := repository.DefaultConfig()
	rc.Root = root
	rc.RescanInterval = time.Second
	rc.Debounce = 50 * time.Millisecond
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() && os.Getenv("FLYWHEEL_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ao := api.Options{Config: api.DefaultConfig(), Logger: logger, Metrics: m, Gatherer: reg, Version: "test"}
	for _, o := range opts {
		o(&rc, &ao)
	}
	repo, err := repository.New(repository.Options{Config: rc, Logger: logger, Metrics: m, Wrap: repository.BatchWrap(logger, nil)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := repo.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	ao.Repository = repo
	srv, err := api.New(ao)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	watchDone := make(chan struct{})
	go func() { _ = repo.Run(ctx); close(watchDone) }()
	go func() { _ = srv.Serve(ln) }()
	srv.SetReady(true)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	ts := &testServer{srv: srv, repo: repo, reg: reg, m: m, url: "http://" + ln.Addr().String(), c: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		cancel()
		<-watchDone
		_ = repo.Close()
		tr.CloseIdleConnections()
	})
	return ts
}

type resp struct {
	code   int
	body   []byte
	header http.Header
}

func (ts *testServer) do(t testing.TB, method, path, contentType string, body []byte, hdr ...string) resp {
	t.Helper()
	req, err := http.NewRequest(method, ts.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	r, err := ts.c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, b, r.Header}
}

func (ts *testServer) post(t testing.TB, path string, body any) resp {
	t.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	return ts.do(t, http.MethodPost, path, "application/json", b)
}

// writeVersion writes a version folder the way publishers must: into a
// hidden temporary folder, then renamed into place.
func writeVersion(t testing.TB, root, model string, version int, files map[string][]byte) {
	t.Helper()
	dir := filepath.Join(root, model)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(dir, ".tmp-")
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(tmp, filepath.Join(dir, itoa(version))); err != nil {
		t.Fatal(err)
	}
}

func itoa(v int) string { return strconv.Itoa(v) }

// waitState polls the repository index until model/version has state, or fails.
func waitState(t testing.TB, repo *repository.Repository, model string, version int64, state string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		for _, vi := range repo.Index() {
			if vi.Model == model && vi.Version == version && vi.State == state {
				return time.Since(start)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s version %d not %s within %s: index %+v", model, version, state, within, repo.Index())
	return 0
}

// writeConfig writes models/<model>/config.yaml.
func writeConfig(t testing.TB, root, model, yaml string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, model), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, model, modelrepo.ConfigFile), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
}
