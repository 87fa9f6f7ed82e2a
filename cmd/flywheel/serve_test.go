package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flywheel-ml/flywheel/server/ort"
	"github.com/flywheel-ml/flywheel/server/predlog"
	"github.com/flywheel-ml/flywheel/server/testmodel"
)

// TestServeStartupErrors: each bad start-up is one clear line, never a panic.
func TestServeStartupErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing ORT library", []string{"--ort-lib", filepath.Join(dir, "nope.so"), "--models", dir}, "ONNX Runtime library not found"},
		{"missing model folder", []string{"--models", filepath.Join(dir, "absent")}, "no such file or directory"},
		{"model folder is a file", []string{"--models", file}, "is not a directory"},
		{"bad log format", []string{"--log-format", "xml"}, `--log-format "xml"`},
		{"bad flag", []string{"--no-such-flag"}, "flag provided but not defined"},
		{"empty token file", []string{"--admin-token-file", file + "-empty"}, "--admin-token-file"},
		{"bad graph optimisation", []string{"--models", dir, "--graph-optimization", "max"}, `graph_optimization_level "max"`},
		{"bad sample rate", []string{"--models", dir, "--predlog-sample-rate", "1.5"}, "sample_rate must be in (0, 1]"},
		{"bad drift window", []string{"--models", dir, "--drift-window", "10", "--drift-min-rows", "20"}, "min_rows must be between 1 and window"},
		{"prediction database in a file", []string{"--models", dir, "--predlog-db", filepath.Join(file, "x.db")}, "--predlog-db"},
	}
	os.WriteFile(file+"-empty", nil, 0o644)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"--listen", "127.0.0.1:0", "--predlog-db", filepath.Join(t.TempDir(), "p.db")}, c.args...)
			err := runServe(context.Background(), args, &out, &errb)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

// TestServeEmptyFolderAndGracefulShutdown starts serve on an empty folder
// (a warning, not an error), publishes a batched model, serves it, then
// cancels the context as SIGTERM does: readiness drops, requests drain, the
// batchers drain, the prediction log is written, sessions close, and no
// goroutine of serve is left.
func TestServeEmptyFolderAndGracefulShutdown(t *testing.T) {
	if _, _, err := ort.Setup(""); err != nil {
		t.Fatal(err)
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		// fasthttp's: one clock per process, and a pool cleaner that sees
		// the server's stop only after its idle sleep (10 s).
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"))
	root := t.TempDir()
	db := filepath.Join(t.TempDir(), "var", "flywheel.db")
	ln := listen(t)
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	base := ort.LiveSessions()
	go func() {
		// The log is written only when serve stops: the shutdown must flush it.
		done <- runServeOn(ctx, []string{"--models", root, "--log-format", "json", "--rescan-interval", "200ms",
			"--predlog-db", db, "--predlog-flush-interval", "1h"}, ln, &logs, &logs)
	}()
	url := "http://" + addr
	waitHTTP(t, url+"/v2/health/ready", 200)
	if !strings.Contains(logs.String(), "model repository is empty") {
		t.Errorf("no empty-folder warning in %s", logs.String())
	}
	// Publish a model: hidden temporary folder renamed into place.
	tmp := filepath.Join(root, "mlp", ".tmp-1")
	os.MkdirAll(tmp, 0o755)
	os.WriteFile(filepath.Join(root, "mlp", "config.yaml"), []byte("dynamic_batching: {max_batch_size: 8, dispatch: workers}\n"), 0o644)
	os.WriteFile(filepath.Join(tmp, "model.onnx"), testmodel.MLPSmall(), 0o644)
	os.Rename(tmp, filepath.Join(root, "mlp", "1"))
	waitHTTP(t, url+"/v2/models/mlp/ready", 200)
	body := `{"inputs":[{"name":"input","shape":[1,16],"datatype":"FP32","data":[` + strings.Repeat("0.1,", 15) + `0.1]}]}`
	for i := range 3 {
		r, err := http.Post(url+"/v2/models/mlp/infer", "application/json", strings.NewReader(`{"id":"shutdown-`+strconv.Itoa(i)+`",`+body[1:]))
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("infer: %v %v", r, err)
		}
		r.Body.Close()
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
	if n := ort.LiveSessions(); n != base {
		t.Errorf("%d live sessions after shutdown, want %d", n, base)
	}
	if !strings.Contains(logs.String(), `"msg":"stopped"`) || !strings.Contains(logs.String(), `"component":"repository"`) {
		t.Errorf("logs: %s", logs.String())
	}
	if _, err := http.Get(url + "/v2/health/live"); err == nil {
		t.Error("still accepting connections after shutdown")
	}
	store, err := predlog.Open(context.Background(), db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for i := range 3 {
		if rec, err := store.Get(context.Background(), "shutdown-"+strconv.Itoa(i)); err != nil || rec.Model != "mlp" || rec.Version != 1 {
			t.Errorf("prediction shutdown-%d after shutdown: %+v, %v", i, rec, err)
		}
	}
}

func waitHTTP(t *testing.T, url string, code int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r, err := http.Get(url)
		if err == nil {
			r.Body.Close()
			if r.StatusCode == code {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never answered %d", url, code)
}

func TestServeHelpListsEnv(t *testing.T) {
	var out bytes.Buffer
	if err := runServe(context.Background(), []string{"--help"}, &out, &out); err != errHelp {
		t.Fatal(err)
	}
	for _, f := range []string{"--models", "--listen", "--ort-lib", "--admin-token", "--admin-token-file", "--body-limit",
		"--read-timeout", "--write-timeout", "--idle-timeout", "--log-format", "--log-level", "--rescan-interval"} {
		env := envName(strings.TrimPrefix(f, "--"))
		if f == "--ort-lib" {
			env = ort.EnvVar
		}
		if !strings.Contains(out.String(), f+" ") || !strings.Contains(out.String(), env) {
			t.Errorf("help lacks %s / %s", f, env)
		}
	}
}
