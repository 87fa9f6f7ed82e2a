//go:build containers

package containertest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/monitoring"
)

// Services that `compose up` starts in the local profile (Grafana has no
// Debian package and stays behind the grafana profile).
var services = []string{"serve", "trainer", "mlflow", "prometheus", "alertmanager"}

// stackConfig names a compose project: its files and the services `up` starts.
type stackConfig struct {
	project  string
	files    []string // relative to the repository
	services []string // each listens on 127.0.0.1:$FLYWHEEL_<SERVICE>_PORT
}

// oneMachine is docker-compose.yml + deploy/compose/local.yml.
var oneMachine = stackConfig{project: "flywheel-test", files: []string{"docker-compose.yml", "deploy/compose/local.yml"}, services: services}

// stack is one compose project of docker-compose.yml + deploy/compose/local.yml
// (and the scaled stack's files, stackConfig).
type stack struct {
	t       *testing.T
	cfg     stackConfig
	root    string            // repository root
	dir     string            // FLYWHEEL_TEST_CONFIG: tokens and rendered configs
	project string            // compose project name
	docker  string            // docker client
	ports   map[string]int    // service → loopback port
	env     map[string]string // added to the compose environment
	tokens  map[string]string // admin, trainer
}

func newStack(t *testing.T) *stack { return newStackWith(t, oneMachine) }

// portVar is the variable holding svc's port (FLYWHEEL_SERVE_A_PORT).
func portVar(svc string) string {
	return "FLYWHEEL_" + strings.ToUpper(strings.ReplaceAll(svc, "-", "_")) + "_PORT"
}

func newStackWith(t *testing.T, cfg stackConfig) *stack {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"DOCKER_HOST", "FLYWHEEL_LOCAL_GO_IMAGE", "FLYWHEEL_LOCAL_NODE_IMAGE", "FLYWHEEL_LOCAL_RUNTIME_IMAGE",
		"FLYWHEEL_LOCAL_PROMETHEUS_IMAGE", "FLYWHEEL_LOCAL_ALERTMANAGER_IMAGE", "FLYWHEEL_LOCAL_MLFLOW_IMAGE"} {
		if os.Getenv(v) == "" {
			t.Fatalf("%s is not set: run this test through deploy/containers.sh test (make test-containers)", v)
		}
	}
	s := &stack{t: t, cfg: cfg, root: root, project: cfg.project, docker: envOr("FLYWHEEL_DOCKER", "docker"),
		ports: map[string]int{}, env: map[string]string{}, tokens: map[string]string{}}
	// The config directory is bind-mounted into containers whose users are
	// not root (Prometheus and Alertmanager run as nobody): world-readable.
	s.dir = filepath.Join(root, "var", "containers", "config")
	if err := os.RemoveAll(s.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, svc := range cfg.services {
		s.ports[svc] = freePort(t)
	}
	s.env["FLYWHEEL_TEST_CONFIG"] = s.dir
	for svc, p := range s.ports {
		s.env[portVar(svc)] = strconv.Itoa(p)
	}
	s.tokens["admin"], s.tokens["trainer"] = randomToken(t), randomToken(t)
	s.writeConfigs()
	return s
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func randomToken(t *testing.T) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func (s *stack) url(svc string) string { return fmt.Sprintf("http://127.0.0.1:%d", s.ports[svc]) }

// writeConfigs writes the token files and monitoring/*.yml rendered with
// loopback targets and seconds instead of minutes (as the closed-loop test and `make demo` do).
func (s *stack) writeConfigs() {
	t := s.t
	addr := func(svc string) string { return fmt.Sprintf("127.0.0.1:%d", s.ports[svc]) }
	am, err := monitoring.RenderAlertmanager(monitoring.Alertmanager, monitoring.AlertmanagerOptions{
		TrainerURL: "http://" + addr("trainer") + "/v1/alerts", GroupWait: time.Second, GroupInterval: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	am = regexp.MustCompile(`(?m)^(\s*)repeat_interval:\s*\S+\s*$`).ReplaceAll(am, []byte("${1}repeat_interval: 10s"))
	rules, err := monitoring.RenderAlerts(monitoring.Alerts, monitoring.RenderOptions{For: alertFor,
		ForAlert: map[string]time.Duration{"FeatureDrift": alertFor, "ModelErrorHigh": alertFor}})
	if err != nil {
		t.Fatal(err)
	}
	rules = []byte(strings.ReplaceAll(string(rules), "[30m]", "[20s]"))
	src, opts := monitoring.Prometheus, monitoring.PrometheusOptions{Serve: addr("serve"), Trainer: addr("trainer"),
		Alertmanager: addr("alertmanager"), ScrapeInterval: time.Second, EvaluationInterval: time.Second}
	if _, scaled := s.ports["postgres"]; scaled {
		// deploy/compose/prometheus-postgres.yml with every replica's port.
		b, err := os.ReadFile(filepath.Join(s.root, "deploy", "compose", "prometheus-postgres.yml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []struct{ svc, port string }{{"serve-a", "8080"}, {"serve-b", "8080"}, {"trainer-a", "8090"}, {"trainer-b", "8090"}} {
			target := fmt.Sprintf("%q", r.svc+":"+r.port)
			if !bytes.Contains(b, []byte(target)) {
				t.Fatalf("prometheus-postgres.yml has no target %s", target)
			}
			b = bytes.ReplaceAll(b, []byte(target), []byte(fmt.Sprintf("%q", addr(r.svc))))
		}
		src, opts.Serve, opts.Trainer = b, "", ""
	}
	prom, err := monitoring.RenderPrometheus(src, opts)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"alertmanager.yml": am, "alerts.yml": rules, "prometheus.yml": prom,
		"admin-token": []byte(s.tokens["admin"] + "\n"), "trainer-token": []byte(s.tokens["trainer"] + "\n"),
		"grafana-admin-password": []byte(randomToken(t) + "\n"),
	}
	if _, scaled := s.ports["postgres"]; scaled {
		// As make secrets writes them, with the test's loopback port.
		s.tokens["postgres"] = randomToken(t)
		files["postgres-password"] = []byte(s.tokens["postgres"])
		files["database-url"] = []byte(s.databaseURL())
	}
	for name, b := range files {
		// 0644 as `make secrets` writes them: compose bind-mounts secret
		// files with their host mode, and the readers are not root.
		if err := os.WriteFile(filepath.Join(s.dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// cmd returns a docker command with the stack's environment.
func (s *stack) cmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, s.docker, args...)
	c.Dir = s.root
	c.Env = os.Environ()
	for k, v := range s.env {
		c.Env = append(c.Env, k+"="+v)
	}
	c.WaitDelay = 10 * time.Second
	return c
}

// databaseURL is the scaled stack's PostgreSQL on its loopback port.
func (s *stack) databaseURL() string {
	return fmt.Sprintf("postgres://flywheel:%s@127.0.0.1:%d/flywheel?sslmode=disable", s.tokens["postgres"], s.ports["postgres"])
}

// composeArgs prefixes args with the project's files and name.
func (s *stack) composeArgs(args ...string) []string {
	out := []string{"compose"}
	for _, f := range s.cfg.files {
		out = append(out, "-f", f)
	}
	return append(append(out, "-p", s.project), args...)
}

// run runs docker with args (limit: timeout) and returns its standard
// output; the test fails with the output's tail when it fails.
func (s *stack) run(timeout time.Duration, args ...string) string {
	s.t.Helper()
	out, err := s.try(timeout, args...)
	if err != nil {
		s.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, tail(out, 40))
	}
	return out
}

func (s *stack) try(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out bytes.Buffer
	c := s.cmd(ctx, args...)
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	return out.String(), err
}

// compose runs `docker compose` for the project.
func (s *stack) compose(timeout time.Duration, args ...string) string {
	s.t.Helper()
	return s.run(timeout, s.composeArgs(args...)...)
}

// composeOut runs `docker compose` and returns only its standard output.
func (s *stack) composeOut(timeout time.Duration, args ...string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out, errOut bytes.Buffer
	c := s.cmd(ctx, s.composeArgs(args...)...)
	c.Stdout, c.Stderr = &out, &errOut
	if err := c.Run(); err != nil {
		s.t.Fatalf("docker compose %s: %v\n%s", strings.Join(args, " "), err, tail(errOut.String(), 40))
	}
	return out.String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// container is one line of `docker compose ps --format json`.
type container struct {
	Service, State, Health, Name string
}

// ps lists the project's containers (also stopped ones with all).
func (s *stack) ps(all bool) []container {
	s.t.Helper()
	args := []string{"ps", "--format", "json"}
	if all {
		args = append(args, "--all")
	}
	out := s.composeOut(time.Minute, args...)
	var cs []container
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		// Compose prints one object per line (older releases: one array).
		if strings.HasPrefix(line, "[") {
			var many []container
			if err := json.Unmarshal([]byte(line), &many); err != nil {
				s.t.Fatalf("compose ps: %v: %s", err, line)
			}
			cs = append(cs, many...)
			continue
		}
		var c container
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			s.t.Fatalf("compose ps: %v: %s", err, line)
		}
		cs = append(cs, c)
	}
	sort.Slice(cs, func(i, k int) bool { return cs[i].Service < cs[k].Service })
	return cs
}

// logs prints the last lines of every service's log (on failure).
func (s *stack) logs() {
	out, _ := s.try(time.Minute, s.composeArgs("logs", "--no-color", "--tail", "60")...)
	s.t.Logf("compose logs (last 60 lines per service):\n%s", out)
}

// down removes the project's containers, networks and volumes.
func (s *stack) down() {
	s.t.Helper()
	s.compose(3*time.Minute, "--profile", "tools", "down", "-v", "--remove-orphans", "--timeout", "20")
}

// finish registers the test's teardown: the logs when it failed, `compose
// down -v`, nothing of the project left, and the report's lines appended to
// var/containers/report.txt, each prefixed with label.
func (s *stack) finish(rep *report, began time.Time, label string) {
	s.t.Cleanup(func() {
		if s.t.Failed() {
			s.logs()
		}
		s.down()
		if left := s.leftovers(); len(left) > 0 {
			s.t.Errorf("after compose down -v: %v", left)
		}
		rep.add("test: %.0fs", time.Since(began).Seconds())
		out := label + ": " + strings.Join(rep.lines, "\n"+label+": ") + "\n"
		s.t.Log("\n" + out)
		f, err := os.OpenFile(filepath.Join(s.root, "var", "containers", "report.txt"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			_, _ = f.WriteString(out)
			f.Close()
		}
	})
}

// downClean runs `compose down -v` (timed in rep): the engine keeps no
// container, volume or network of the project, and nothing listens on the
// stack's ports.
func (s *stack) downClean(rep *report) {
	s.t.Helper()
	start := time.Now()
	s.down()
	rep.add("compose down -v: %.0fs", time.Since(start).Seconds())
	if left := s.leftovers(); len(left) > 0 {
		s.t.Errorf("after compose down -v the engine still has %v", left)
	}
	for svc, p := range s.ports {
		if listening(p) {
			s.t.Errorf("after compose down -v something still listens on %s's port %d", svc, p)
		}
	}
}

// leftovers lists the engine's containers and volumes of the project.
func (s *stack) leftovers() []string {
	s.t.Helper()
	label := "label=com.docker.compose.project=" + s.project
	var left []string
	for _, args := range [][]string{
		{"ps", "-a", "--filter", label, "--format", "container {{.Names}} {{.Status}}"},
		{"volume", "ls", "--filter", label, "--format", "volume {{.Name}}"},
		{"network", "ls", "--filter", label, "--format", "network {{.Name}}"},
	} {
		out := s.run(time.Minute, args...)
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if l != "" {
				left = append(left, l)
			}
		}
	}
	return left
}

// httpGet GETs url with an optional bearer token and decodes JSON into v
// (when not nil); it returns the status code and the body.
func httpGet(ctx context.Context, url, token string, v any) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, b, err
	}
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, v); err != nil {
			return resp.StatusCode, b, fmt.Errorf("GET %s: %w", url, err)
		}
	}
	return resp.StatusCode, b, nil
}

func waitUntil(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// listening reports whether something accepts connections on 127.0.0.1:port.
func listening(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
