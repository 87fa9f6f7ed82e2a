package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/train/external"
	"github.com/flywheel-ml/flywheel/train/jobs"
	"github.com/flywheel-ml/flywheel/train/pipeline/pipelinetest"
	"github.com/flywheel-ml/flywheel/train/serving/servetest"
)

const trainerToken = "tok-123"

// listen returns a loopback listener the test holds until the code under
// test serves on it (no window in which another process takes the port).
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// loopFixture is a model repository with a champion, a base dataset and a
// stand-in serve holding drifted feedback.
type loopFixture struct {
	dir, models, base string
	serve             *servetest.Server
}

func newLoopFixture(t *testing.T) *loopFixture {
	t.Helper()
	f := &loopFixture{dir: t.TempDir()}
	f.models = filepath.Join(f.dir, "models")
	f.base = filepath.Join(f.dir, "base.csv")
	pipelinetest.WriteBase(t, f.base, 366)
	pipelinetest.Champion(t, &external.Trainer{Command: pipelinetest.ExampleTrainer()}, f.models, "ridership", f.base, 366, 4)
	f.serve = servetest.New(f.models, "adm")
	t.Cleanup(f.serve.Close)
	f.serve.AddFeedback(pipelinetest.Feedback("ridership", 366, 120, 8)...)
	return f
}

// inProcessTrainer is `flywheel trainer` run in the test's process on a
// listener the test holds.
type inProcessTrainer struct {
	base   string
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// startTrainer runs runTrainerOn with args(its address) on a fresh loopback
// listener and waits until /health/ready answers 200.
func startTrainer(t *testing.T, args func(addr string) []string) *inProcessTrainer {
	t.Helper()
	ln := listen(t)
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	tr := &inProcessTrainer{base: "http://" + addr, logs: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { tr.done <- runTrainerOn(ctx, args(addr), ln, io.Discard, tr.logs) }()
	waitFor(t, "trainer ready", 20*time.Second, func() bool { c, _ := getJSON(tr.base+"/health/ready", nil); return c == 200 })
	return tr
}

// stop cancels the trainer and fails the test unless it returns nil
// within limit.
func (tr *inProcessTrainer) stop(t *testing.T, limit time.Duration) {
	t.Helper()
	tr.cancel()
	select {
	case err := <-tr.done:
		if err != nil {
			t.Errorf("runTrainer: %v", err)
		}
	case <-time.After(limit):
		t.Fatal("trainer did not stop")
	}
}

func (f *loopFixture) args(addr, externalCmd string) []string {
	return []string{"--listen", addr, "--token", trainerToken, "--db", filepath.Join(f.dir, "jobs.db"), "--models", f.models,
		"--work-dir", filepath.Join(f.dir, "work"), "--data", f.base, "--target", "y", "--features", "columns", "--serve-url", f.serve.URL,
		"--tracking-db", filepath.Join(f.dir, "tracking.db"),
		"--admin-token", "adm", "--external-cmd", externalCmd, "--window-days", "60", "--ready-wait", "10s", "--log-format", "json"}
}

func post(t *testing.T, url, auth, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// getJSON sends the trainer's token (GET /v1/jobs needs it; serve ignores it).
func getJSON(url string, v any) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+trainerToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if v == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(v)
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func firingAlert(t *testing.T) string {
	b, err := os.ReadFile("../../train/alert/testdata/firing.json")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTrainerCommand(t *testing.T) {
	f := newLoopFixture(t)
	tr := startTrainer(t, func(addr string) []string {
		return f.args(addr, strings.Join(pipelinetest.ExampleTrainer(), " "))
	})
	base, logs := tr.base, tr.logs

	// Faults first: no job may come from them.
	for _, tc := range []struct {
		auth, body string
		code       int
	}{
		{"", firingAlert(t), 401},
		{"Bearer wrong", firingAlert(t), 401},
		{"Bearer " + trainerToken, `{"version":"4"`, 400},
	} {
		if code, body := post(t, base+"/v1/alerts", tc.auth, tc.body); code != tc.code {
			t.Errorf("POST /v1/alerts (%q) = %d %s, want %d", tc.auth, code, body, tc.code)
		}
	}
	var list struct{ Jobs []jobs.Job }
	if _, err := getJSON(base+"/v1/jobs", &list); err != nil || len(list.Jobs) != 0 {
		t.Fatalf("jobs after faults = %v, %v", list.Jobs, err)
	}

	code, body := post(t, base+"/v1/alerts", "Bearer "+trainerToken, firingAlert(t))
	if code != 202 {
		t.Fatalf("alert: %d %s", code, body)
	}
	// Alertmanager re-sends: same job.
	if code, body := post(t, base+"/v1/alerts", "Bearer "+trainerToken, firingAlert(t)); code != 202 || !strings.Contains(body, `"status":"duplicate"`) {
		t.Errorf("re-send: %d %s", code, body)
	}
	var resp struct{ Jobs []jobs.Job }
	_ = json.Unmarshal([]byte(body), &resp)
	id := resp.Jobs[0].ID
	var j jobs.Job
	waitFor(t, "job to finish", 60*time.Second, func() bool { _, err := getJSON(base+"/v1/jobs/"+id, &j); return err == nil && j.Final() })
	if j.State != jobs.StateSucceeded || j.Deliveries != 2 {
		t.Fatalf("job %s (%d deliveries): %s\n%s", j.State, j.Deliveries, j.Reason, logs.String())
	}
	for _, st := range j.Steps {
		t.Logf("step %-8s %-9s %6.3fs %s", st.Name, st.State, st.Seconds, st.Detail)
	}
	if _, err := os.Stat(filepath.Join(f.models, "ridership", "2", "model.onnx")); err != nil {
		t.Error(err)
	}
	mresp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{`flywheel_trainer_jobs_total{outcome="succeeded"} 1`, `flywheel_trainer_step_duration_seconds_count{step="train"} 1`,
		"flywheel_trainer_queue_length 0", "flywheel_trainer_alert_to_serving_seconds", "flywheel_trainer_last_success_timestamp_seconds"} {
		if !strings.Contains(string(mb), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	tr.stop(t, 15*time.Second)
	if strings.Contains(logs.String(), trainerToken) {
		t.Error("the token leaked into the logs")
	}
}

func TestTrainerFlags(t *testing.T) {
	var out bytes.Buffer
	if err := runTrainer(context.Background(), []string{"--help"}, &out, io.Discard); err != errHelp {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"--listen", "FLYWHEEL_TOKEN", "--token-file", "--cooldown", "--external-cmd", "--margin", "default :8090"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "tok")
	os.WriteFile(tokenFile, []byte("x\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--external-cmd", "x"}, "a bearer token is required"},
		{[]string{"--token", "a", "--token-file", tokenFile}, "at most one of --token and --token-file"},
		{[]string{"--token-file", tokenFile, "--features", "raw"}, `--features "raw" is not ridership or columns`},
		{[]string{"--token", "a", "--algorithm", "xgboost"}, `--algorithm "xgboost" is not one of ridge, mlp, gbdt`},
		{[]string{"--token", "a", "--set", "epochs"}, `--set "epochs": want key=value`},
		{[]string{"--token", "a", "--external-cmd", "", "--test-fraction", "1"}, "--test-fraction 1 must be in (0, 1)"},
		{[]string{"--token", "a", "--external-cmd", "x", "--margin", "3"}, "margin 3 must be in [0, 1)"},
		{[]string{"--token", "a", "--log-level", "loud"}, "--log-level"},
		{[]string{"--token", "a", "--models", "models:/ridership/3", "--tracking-uri", "http://127.0.0.1:1"}, "the trainer moves an alias: use models:/ridership@<alias>"},
		{[]string{"--token", "a", "--models", "models:/ridership@champion"}, "set --tracking-uri or MLFLOW_TRACKING_URI"},
		{[]string{"--token", "a", "--models", "models:/ridership@champion", "--tracking-uri", "http://127.0.0.1:1", "--track=false"}, "--track=false cannot be used"},
		{[]string{"--token", "a", "--models", "models:/ride rship@champion"}, "want models:/<name>@<alias>"},
		{[]string{"--nope"}, "flag provided but not defined"},
	} {
		err := runTrainer(context.Background(), tc.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

// flywheelBinary builds cmd/flywheel into a temporary directory.
func flywheelBinary(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flywheel")
	if out, err := exec.Command("go", "build", "-o", path, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return path
}

// TestTrainerKilledMidJob kills the trainer process (SIGKILL) while the
// external trainer runs, restarts it, and checks that the job is retried once
// and completes, publishing exactly one version.
func TestTrainerKilledMidJob(t *testing.T) {
	bin := flywheelBinary(t)
	f := newLoopFixture(t)
	// The first run of this trainer hangs (the trainer gets killed meanwhile);
	// later runs train for real.
	script := filepath.Join(f.dir, "slow_trainer.sh")
	mark, pidFile := filepath.Join(f.dir, "first-run"), filepath.Join(f.dir, "sleep.pid")
	os.WriteFile(script, []byte(fmt.Sprintf("#!/bin/sh\nif [ ! -f %s ]; then touch %s; echo $$ > %s; exec sleep 60; fi\nexec %s \"$@\"\n",
		mark, mark, pidFile, strings.Join(pipelinetest.ExampleTrainer(), " "))), 0o755)
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	// The test holds the listening socket and hands it to each trainer
	// process as fd 3 (--listen fd:3): the port stays the same across the
	// kill and the restart, and is never found free and reused.
	ln := listen(t)
	sock, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	base := "http://" + ln.Addr().String()
	start := func(name string) (*exec.Cmd, *syncBuffer) {
		var logs syncBuffer
		cmd := exec.Command(bin, append([]string{"trainer"}, f.args("fd:3", "/bin/sh "+script)...)...)
		cmd.ExtraFiles = []*os.File{sock}
		cmd.Stdout, cmd.Stderr = &logs, &logs
		cmd.Env = append(os.Environ(), "FLYWHEEL_TOKEN=") // flags win; keep env clean
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		waitFor(t, name+" ready", 30*time.Second, func() bool { c, _ := getJSON(base+"/health/ready", nil); return c == 200 })
		return cmd, &logs
	}
	first, _ := start("first trainer")
	code, body := post(t, base+"/v1/alerts", "Bearer "+trainerToken, firingAlert(t))
	if code != 202 {
		t.Fatalf("alert: %d %s", code, body)
	}
	var resp struct{ Jobs []jobs.Job }
	_ = json.Unmarshal([]byte(body), &resp)
	id := resp.Jobs[0].ID
	var j jobs.Job
	waitFor(t, "the train step", 30*time.Second, func() bool {
		_, err := getJSON(base+"/v1/jobs/"+id, &j)
		_, serr := os.Stat(pidFile)
		return err == nil && j.Step == "train" && serr == nil
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()

	_, logs := start("restarted trainer")
	waitFor(t, "the retried job", 60*time.Second, func() bool { _, err := getJSON(base+"/v1/jobs/"+id, &j); return err == nil && j.Final() })
	if j.State != jobs.StateSucceeded || j.Attempt != 2 {
		t.Fatalf("job %s attempt %d: %s\n%s", j.State, j.Attempt, j.Reason, logs.String())
	}
	var attempt1 []string
	for _, st := range j.Steps {
		if st.Attempt == 1 {
			attempt1 = append(attempt1, st.Name+"="+st.State)
		}
	}
	if got := strings.Join(attempt1, " "); got != "snapshot=succeeded train=interrupted" {
		t.Errorf("attempt 1 steps = %s", got)
	}
	if !strings.Contains(logs.String(), "recovered an interrupted job") {
		t.Errorf("restart did not log the recovery:\n%s", logs.String())
	}
	ents, _ := os.ReadDir(filepath.Join(f.models, "ridership"))
	if len(ents) != 2 {
		t.Errorf("model versions = %d entries, want 1 and 2", len(ents))
	}
	// A re-sent alert after the restart maps to the same job: nothing runs twice.
	if code, body := post(t, base+"/v1/alerts", "Bearer "+trainerToken, firingAlert(t)); code != 202 || !strings.Contains(body, `"status":"duplicate"`) {
		t.Errorf("re-send after restart: %d %s", code, body)
	}
}
