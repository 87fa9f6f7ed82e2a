// Package harness starts the real programs of the retraining loop for
// end-to-end tests — Prometheus, Alertmanager and the flywheel binary — on
// free loopback ports with temporary configs and data directories, waits
// until each is ready, keeps their logs and stops them when the test ends.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/server/ort"
)

// Binaries of the Debian packages prometheus and prometheus-alertmanager.
const (
	PrometheusBinary   = "prometheus"
	AlertmanagerBinary = "prometheus-alertmanager"
)

// FreeAddr returns a free 127.0.0.1 address.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Spec describes one process.
type Spec struct {
	Name      string        // for logs
	Path      string        // binary
	Args      []string      //
	Dir       string        // working directory
	Env       []string      // added to the environment
	ReadyURL  string        // polled until it answers 200
	ReadyWait time.Duration // 30s when zero
	// StopGroup signals the whole process group on Stop (servers that fork
	// workers, such as MLflow's gunicorn) and accepts death by that signal.
	StopGroup bool
}

// Process is a started program.
type Process struct {
	Name string
	Addr string // host:port it listens on, when known
	URL  string // http://Addr
	Dir  string // its temporary directory (configs, data)

	cmd   *exec.Cmd
	group bool
	logs  *SyncBuffer
	done  chan struct{}
	err   error
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes and reads, for a
// process's or a component's whole output (tests are short).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *SyncBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *SyncBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Logs returns everything the process wrote so far.
func (p *Process) Logs() string { return p.logs.String() }

// PID returns the process id (for /proc readings such as RSS).
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Start runs spec, waits until ReadyURL answers 200 and registers a cleanup
// that stops the process and, when the test failed, prints its logs.
func Start(t testing.TB, spec Spec) *Process {
	t.Helper()
	p := &Process{Name: spec.Name, Dir: spec.Dir, group: spec.StopGroup, logs: &SyncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(spec.Path, spec.Args...)
	p.cmd.Dir = spec.Dir
	p.cmd.Env = append(os.Environ(), spec.Env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", spec.Name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if err := p.Stop(10 * time.Second); err != nil {
			t.Errorf("stopping %s: %v", p.Name, err)
		}
		if t.Failed() {
			t.Logf("---- %s logs ----\n%s", p.Name, tail(p.Logs(), 8000))
		}
	})
	if spec.ReadyURL != "" {
		wait := spec.ReadyWait
		if wait == 0 {
			wait = 30 * time.Second
		}
		if err := p.waitReady(spec.ReadyURL, wait); err != nil {
			t.Fatalf("%s not ready: %v\n---- logs ----\n%s", spec.Name, err, tail(p.Logs(), 8000))
		}
	}
	return p
}

func (p *Process) waitReady(url string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	client := &http.Client{Timeout: time.Second}
	var last error
	for time.Now().Before(deadline) {
		if p.Exited() {
			return fmt.Errorf("exited: %v", p.err)
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("after %s: %v", wait, last)
}

// Stop sends SIGTERM, waits up to grace, then kills the process group. It
// returns an error when the process had to be killed or exited badly.
func (p *Process) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	if p.group {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	} else {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
		var ee *exec.ExitError
		if p.group && errors.As(p.err, &ee) && !ee.Exited() {
			return nil // ended by the SIGTERM it was sent
		}
		if p.err != nil && !(errors.As(p.err, &ee) && ee.ExitCode() == 0) {
			return fmt.Errorf("exit after SIGTERM: %v", p.err)
		}
		return nil
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("did not stop within %s of SIGTERM; killed", grace)
	}
}

// Kill stops the process group with SIGKILL at once (a crash).
func (p *Process) Kill() {
	if !p.Exited() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// WriteFiles writes name → content under dir.
func WriteFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// PrometheusOptions configure StartPrometheus. Config is prometheus.yml; the
// files (rule files, …) are written beside it and may be referenced by
// relative paths.
type PrometheusOptions struct {
	Config string
	Files  map[string]string
	Args   []string
}

// StartPrometheus starts Prometheus on a free port with its own TSDB. Alerts
// are re-sent every second (--rules.alert.resend-delay=1s): the first send
// is dropped when it races Alertmanager discovery at start-up, and the
// default would wait a minute to resend.
func StartPrometheus(t testing.TB, o PrometheusOptions) *Process {
	t.Helper()
	return startPromComponent(t, "prometheus", PrometheusBinary, "prometheus.yml", o.Config, o.Files, o.Args,
		func(dir, addr string) []string {
			return []string{"--storage.tsdb.path=" + filepath.Join(dir, "data"), "--web.listen-address=" + addr,
				"--web.enable-lifecycle", "--rules.alert.resend-delay=1s", "--log.level=info"}
		})
}

// startPromComponent writes config (as configName) and files into a fresh
// temporary directory and starts the binary there on a free address,
// ready once /-/ready answers; flags gives its flags (after
// --config.file) for that directory and address, extra follows them.
func startPromComponent(t testing.TB, name, binary, configName, config string, files map[string]string,
	extra []string, flags func(dir, addr string) []string) *Process {
	t.Helper()
	dir := t.TempDir()
	all := map[string]string{configName: config}
	for k, v := range files {
		all[k] = v
	}
	WriteFiles(t, dir, all)
	addr := FreeAddr(t)
	args := append([]string{"--config.file=" + configName}, flags(dir, addr)...)
	p := Start(t, Spec{Name: name, Path: binary, Dir: dir, ReadyURL: "http://" + addr + "/-/ready", Args: append(args, extra...)})
	p.Addr, p.URL = addr, "http://"+addr
	return p
}

// AlertmanagerOptions configure StartAlertmanager; Files are written beside
// alertmanager.yml (e.g. the bearer credentials file).
type AlertmanagerOptions struct {
	Config string
	Files  map[string]string
	Args   []string
}

// StartAlertmanager starts Alertmanager on a free port, clustering off.
func StartAlertmanager(t testing.TB, o AlertmanagerOptions) *Process {
	t.Helper()
	return startPromComponent(t, "alertmanager", AlertmanagerBinary, "alertmanager.yml", o.Config, o.Files, o.Args,
		func(dir, addr string) []string {
			return []string{"--storage.path=" + filepath.Join(dir, "data"), "--web.listen-address=" + addr,
				"--cluster.listen-address=", "--log.level=info"}
		})
}

// RepoRoot is the module root (the directory holding go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// BuildFlywheel builds cmd/flywheel into a temporary directory.
func BuildFlywheel(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "flywheel")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/flywheel")
	cmd.Dir = RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/flywheel: %v\n%s", err, out)
	}
	return bin
}

// StartFlywheel runs `flywheel <sub> args...` in a temporary directory with
// FLYWHEEL_ORT_LIB pointing at the repository's ONNX Runtime library, and
// waits for readyPath on addr.
func StartFlywheel(t testing.TB, bin, sub, addr, readyPath string, args ...string) *Process {
	t.Helper()
	lib, err := ort.FindLibrary("")
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(lib) {
		lib = filepath.Join(RepoRoot(t), lib)
	}
	p := Start(t, Spec{Name: "flywheel " + sub, Path: bin, Dir: t.TempDir(), Args: append([]string{sub}, args...),
		Env: []string{ort.EnvVar + "=" + lib}, ReadyURL: "http://" + addr + readyPath})
	p.Addr, p.URL = addr, "http://"+addr
	return p
}

// Contains reports whether the logs contain s (for waiting on log lines).
func (p *Process) Contains(s string) bool { return strings.Contains(p.Logs(), s) }

// ProcStatus returns a kB field of /proc/<pid>/status in bytes (VmRSS:,
// VmHWM: the peak resident set); pid 0 is this process.
func ProcStatus(t testing.TB, pid int, field string) int64 {
	t.Helper()
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatalf("%s %s: %v", path, field, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in %s", field, path)
	return 0
}
