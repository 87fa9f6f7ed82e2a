package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// MLflowHomeEnv names the directory `make mlflow` installed MLflow into
// (it holds venv/); the default is bin/tools/mlflow under the module root.
const MLflowHomeEnv = "FLYWHEEL_MLFLOW_HOME"

// MLflowHome returns the MLflow installation the tests use and fails the
// test, naming the make target, when it is missing: `make test` installs it
// first, so a missing install is an error, never a skip.
func MLflowHome(t testing.TB) string {
	t.Helper()
	home := os.Getenv(MLflowHomeEnv)
	if home == "" {
		home = filepath.Join(RepoRoot(t), "bin", "tools", "mlflow")
	}
	if _, err := os.Stat(filepath.Join(home, "venv", "bin", "mlflow")); err != nil {
		t.Fatalf("MLflow 2.10.2 is not installed in %s: run `make mlflow` (make test does it first): %v", home, err)
	}
	return home
}

// MLflowPython is the Python of the MLflow venv (it imports mlflow, so tests
// can read what Flywheel wrote with MLflow's own client).
func MLflowPython(t testing.TB) string {
	t.Helper()
	return filepath.Join(MLflowHome(t), "venv", "bin", "python")
}

// MLflow is a real MLflow tracking server (SQLite backend store, proxied
// artifacts) on a free loopback port with its own data directory. It can be
// stopped and started again on the same port and data (fallback tests).
type MLflow struct {
	URL  string // http://127.0.0.1:port
	Addr string
	Data string // data directory: mlflow.db and artifacts/

	t    testing.TB
	home string
	proc *Process
}

// StartMLflow installs nothing: it runs the server of MLflowHome with
// ../shared/mlflow/start.sh when that script exists (the command it runs
// otherwise) and waits until /health answers.
func StartMLflow(t testing.TB) *MLflow {
	t.Helper()
	m := &MLflow{t: t, home: MLflowHome(t), Data: t.TempDir(), Addr: FreeAddr(t)}
	m.URL = "http://" + m.Addr
	m.Start()
	return m
}

// Start (re)starts the server on the same port and data directory.
func (m *MLflow) Start() {
	m.t.Helper()
	if m.proc != nil && !m.proc.Exited() {
		m.t.Fatalf("mlflow already running on %s", m.Addr)
	}
	_, port, _ := net.SplitHostPort(m.Addr)
	spec := Spec{Name: "mlflow", Dir: m.Data, ReadyURL: m.URL + "/health", ReadyWait: 90 * time.Second, StopGroup: true,
		Env: []string{"MLFLOW_WORKERS=1", "GUNICORN_CMD_ARGS=--timeout 120"}}
	if script := filepath.Join(RepoRoot(m.t), "..", "shared", "mlflow", "start.sh"); fileExists(script) {
		spec.Path, spec.Args = "bash", []string{script, m.home, m.Data, port}
	} else {
		if err := os.MkdirAll(filepath.Join(m.Data, "artifacts"), 0o755); err != nil {
			m.t.Fatal(err)
		}
		spec.Path = filepath.Join(m.home, "venv", "bin", "mlflow")
		spec.Args = []string{"server", "--host", "127.0.0.1", "--port", port,
			"--backend-store-uri", "sqlite:///" + filepath.Join(m.Data, "mlflow.db"),
			"--serve-artifacts", "--artifacts-destination", filepath.Join(m.Data, "artifacts"), "--workers", "1"}
	}
	m.proc = Start(m.t, spec)
	m.proc.Addr, m.proc.URL = m.Addr, m.URL
}

// Stop stops the server (SIGTERM to its process group: gunicorn workers
// too; SIGKILL when it has not ended 15 s later). Either way the server is
// gone when Stop returns, which is all a test stopping it needs: a slow
// gunicorn shutdown on a busy box is logged, not a failure.
func (m *MLflow) Stop() {
	m.t.Helper()
	if err := m.proc.Stop(15 * time.Second); err != nil {
		m.t.Logf("stopping mlflow: %v", err)
	}
}

// Logs returns the server's output since it was last started.
func (m *MLflow) Logs() string { return m.proc.Logs() }

// Python runs a Python program with the MLflow venv's interpreter,
// MLFLOW_TRACKING_URI pointing at this server, and returns its stdout.
func (m *MLflow) Python(program string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(m.home, "venv", "bin", "python"), append([]string{"-c", program}, args...)...)
	cmd.Env = append(os.Environ(), "MLFLOW_TRACKING_URI="+m.URL, "PYTHONWARNINGS=ignore")
	cmd.Dir = m.t.TempDir()
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), fmt.Errorf("python: %v\n%s", err, tail(string(ee.Stderr), 4000))
	}
	return string(out), err
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
