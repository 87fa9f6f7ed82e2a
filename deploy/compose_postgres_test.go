package deploy

import (
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"sigs.k8s.io/yaml"
)

// The scaled stack: docker-compose.yml + docker-compose.postgres.yml.
const postgresOverride = "docker-compose.postgres.yml"

// replicasOf maps each load-balanced service of the scaled stack to its
// replicas: `serve` and `trainer` become HAProxy in front of them.
var replicasOf = map[string][]string{"serve": {"serve-a", "serve-b"}, "trainer": {"trainer-a", "trainer-b"}}

// loadCompose loads the compose files (relative to the repository) as
// `docker compose -f … config` does, default profiles only.
func loadCompose(t *testing.T, env map[string]string, project string, files ...string) *types.Project {
	t.Helper()
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cfs []types.ConfigFile
	for _, f := range files {
		cfs = append(cfs, types.ConfigFile{Filename: filepath.Join(root, f)})
	}
	p, err := loader.LoadWithContext(ctx, types.ConfigDetails{WorkingDir: root, ConfigFiles: cfs, Environment: env},
		func(o *loader.Options) {
			if project != "" {
				o.SetProjectName(project, true)
			}
		})
	if err != nil {
		t.Fatalf("loading %s: %v", strings.Join(files, " + "), err)
	}
	return p
}

func postgresProject(t *testing.T) *types.Project {
	return loadCompose(t, nil, "", "docker-compose.yml", postgresOverride)
}

// The scaled stack starts PostgreSQL, two serve and two trainer replicas on
// it behind HAProxy (as `serve` and `trainer`), and the rest of the one-
// machine stack; everything has a health check and restarts.
func TestComposePostgresTopology(t *testing.T) {
	p := postgresProject(t)
	want := []string{"alertmanager", "grafana", "mlflow", "postgres", "prometheus",
		"serve", "serve-a", "serve-b", "trainer", "trainer-a", "trainer-b"}
	if got := keys(p.Services); !slices.Equal(got, want) {
		t.Errorf("`up` starts %v, want %v", got, want)
	}
	for name, s := range p.Services {
		if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) < 2 {
			t.Errorf("%s has no healthcheck", name)
		}
		if s.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("%s restart %q, want unless-stopped", name, s.Restart)
		}
		if !imagePinned(s.Image) {
			t.Errorf("%s: image %q is not pinned", name, s.Image)
		}
		for dep, d := range s.DependsOn {
			if d.Condition == types.ServiceConditionHealthy {
				if hc := p.Services[dep].HealthCheck; hc == nil || hc.Disable {
					t.Errorf("%s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
				}
			}
		}
	}
	// Users reach the same ports as the one-machine stack: serve's is now
	// its load balancer's; replicas and PostgreSQL publish nothing.
	published := map[string]string{}
	for name, s := range p.Services {
		for _, port := range s.Ports {
			published[name] = port.Published
		}
	}
	if want := map[string]string{"serve": "8080", "mlflow": "5000", "prometheus": "9090", "alertmanager": "9093", "grafana": "3000"}; !reflect.DeepEqual(published, want) {
		t.Errorf("published ports %v, want %v", published, want)
	}
	single := composeProject(t, nil)
	for lb, replicas := range replicasOf {
		for _, r := range replicas {
			checkReplica(t, p, single, lb, r)
		}
		checkLoadBalancer(t, p, lb, replicas)
	}
	// The two trainers claim jobs under different names.
	if a, b := env(p.Services["trainer-a"], "FLYWHEEL_NAME"), env(p.Services["trainer-b"], "FLYWHEEL_NAME"); a == "" || a == b {
		t.Errorf("trainer replicas named %q and %q: each needs its own FLYWHEEL_NAME", a, b)
	}
}

// checkReplica: a replica is the one-machine service (image, command,
// tokens) on the shared database: its URL from the database_url secret, no
// SQLite and no volume but the shared model repository, nothing published,
// started once PostgreSQL is healthy.
func checkReplica(t *testing.T, p, single *types.Project, lb, name string) {
	t.Helper()
	s, base := p.Services[name], single.Services[lb]
	if s.Image != base.Image || !slices.Equal(s.Command, base.Command) {
		t.Errorf("%s runs %s %v, want %s's %s %v", name, s.Image, s.Command, lb, base.Image, base.Command)
	}
	if f := env(s, "FLYWHEEL_DATABASE_URL_FILE"); secretAt(s, f) != "database_url" {
		t.Errorf("%s: FLYWHEEL_DATABASE_URL_FILE=%q is not the mounted database_url secret", name, f)
	}
	for _, k := range []string{"FLYWHEEL_DATABASE_URL", "FLYWHEEL_PREDLOG_DB", "FLYWHEEL_DB"} {
		if _, ok := s.Environment[k]; ok {
			t.Errorf("%s sets %s: the replicas' store is the database_url secret's", name, k)
		}
	}
	if d, ok := s.DependsOn["postgres"]; !ok || d.Condition != types.ServiceConditionHealthy {
		t.Errorf("%s does not wait for postgres to be healthy", name)
	}
	if len(s.Ports) > 0 {
		t.Errorf("%s publishes %v; users reach it through %s", name, s.Ports, lb)
	}
	port := contractPorts[lb]
	if listen := env(s, "FLYWHEEL_LISTEN"); listen != ":"+strconv.Itoa(int(port)) || !listens(s, port) {
		t.Errorf("%s: FLYWHEEL_LISTEN=%q, exposes %v; want :%d", name, listen, s.Expose, port)
	}
	if len(s.Volumes) != 1 || s.Volumes[0].Source != "models" || s.Volumes[0].Target != env(s, "FLYWHEEL_MODELS") {
		t.Errorf("%s mounts %v, want only the models volume at FLYWHEEL_MODELS", name, s.Volumes)
	}
	// The admin and trainer tokens are those of the one-machine service.
	for _, k := range []string{"FLYWHEEL_ADMIN_TOKEN_FILE", "FLYWHEEL_TOKEN_FILE"} {
		if got, want := secretAt(s, env(s, k)), secretAt(base, env(base, k)); got != want {
			t.Errorf("%s: %s is secret %q, %s's is %q", name, k, got, lb, want)
		}
	}
	if lb == "trainer" {
		// Serve through its load balancer: any replica's readiness.
		if got := env(s, "FLYWHEEL_SERVE_URL"); got != "http://serve:8080" {
			t.Errorf("%s: FLYWHEEL_SERVE_URL=%q, want the serve load balancer http://serve:8080", name, got)
		}
	}
}

// lbVar matches the environment variables HAProxy reads in haproxy.cfg.
var lbVar = regexp.MustCompile(`"\$\{([A-Z_]+)\}"`)

// checkLoadBalancer: `serve` / `trainer` is HAProxy with
// deploy/compose/haproxy.cfg on the service's port, round robin over its
// replicas, checking the route the replicas' own health checks use; its
// health check is the config's monitor-uri.
func checkLoadBalancer(t *testing.T, p *types.Project, name string, replicas []string) {
	t.Helper()
	s := p.Services[name]
	port := contractPorts[name]
	if !strings.HasPrefix(s.Image, "haproxy:") || s.Build != nil {
		t.Errorf("%s: image %q (build %v), want HAProxy", name, s.Image, s.Build != nil)
	}
	cfgPath := flagValue(s.Command, "-f")
	if src := mountedFrom(t, s, cfgPath); src != "deploy/compose/haproxy.cfg" {
		t.Fatalf("%s: -f %s is mounted from %q, want deploy/compose/haproxy.cfg", name, cfgPath, src)
	}
	if len(s.Volumes) != 1 || len(s.Secrets) != 0 {
		t.Errorf("%s mounts %v and secrets %v; a load balancer needs only its config", name, s.Volumes, s.Secrets)
	}
	cfg := string(readFile(t, "deploy/compose/haproxy.cfg"))
	used := map[string]bool{}
	for _, m := range lbVar.FindAllStringSubmatch(cfg, -1) {
		used[m[1]] = true
		if _, ok := s.Environment[m[1]]; !ok {
			t.Errorf("%s: haproxy.cfg reads %s, which is not set", name, m[1])
		}
	}
	for k := range s.Environment {
		if !used[k] {
			t.Errorf("%s sets %s, which haproxy.cfg does not read", name, k)
		}
	}
	for _, want := range []string{"balance roundrobin", "option httpchk GET \"${LB_CHECK}\"", "server a \"${LB_SERVER_A}\" check", "server b \"${LB_SERVER_B}\" check"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("haproxy.cfg lacks %q", want)
		}
	}
	if bind := env(s, "LB_BIND"); bind != ":"+strconv.Itoa(int(port)) || !listens(s, port) {
		t.Errorf("%s: LB_BIND=%q, want :%d (the service's port)", name, bind, port)
	}
	for i, r := range replicas {
		addr := env(s, "LB_SERVER_"+string(rune('A'+i)))
		if host := serviceAddr(t, p, name+" LB_SERVER", addr, name); host != r {
			t.Errorf("%s: server %d is %q, want %s", name, i, addr, r)
		}
		if d, ok := s.DependsOn[r]; !ok || d.Condition != types.ServiceConditionStarted {
			t.Errorf("%s does not start after %s (HAProxy checks the replicas' health itself)", name, r)
		}
		if u := lastURL(p.Services[r].HealthCheck.Test); u == nil || u.Path != env(s, "LB_CHECK") {
			t.Errorf("%s checks %s on %q, its own health check probes %v", name, r, env(s, "LB_CHECK"), p.Services[r].HealthCheck.Test)
		}
	}
	routes := map[string][]string{"serve": serveRoutes, "trainer": trainerRoutes}[name]
	if !hasRoute(routes, env(s, "LB_CHECK")) {
		t.Errorf("%s: LB_CHECK=%q is not one of %v", name, env(s, "LB_CHECK"), routes)
	}
	monitor := regexp.MustCompile(`(?m)^\s*monitor-uri\s+(\S+)`).FindStringSubmatch(cfg)
	u := lastURL(s.HealthCheck.Test)
	if monitor == nil || u == nil || u.Path != monitor[1] || u.Port() != strconv.Itoa(int(port)) {
		t.Errorf("%s: health check %v does not probe haproxy.cfg's monitor-uri on :%d", name, s.HealthCheck.Test, port)
	}
	if !strings.Contains(cfg, "monitor fail if { nbsrv(replicas) lt 1 }") {
		t.Error("haproxy.cfg: the monitor-uri must fail while no replica is up")
	}
}

// PostgreSQL: the password is a secret file (POSTGRES_PASSWORD_FILE), data
// on its volume, a pg_isready health check for the URL's user and
// database; the database_url secret `make secrets` writes names this
// service, its port, user, database and password.
func TestComposePostgresDatabase(t *testing.T) {
	p := postgresProject(t)
	checkSecrets(t, p)
	pg := p.Services["postgres"]
	if _, ok := pg.Environment["POSTGRES_PASSWORD"]; ok {
		t.Error("postgres sets POSTGRES_PASSWORD inline; use POSTGRES_PASSWORD_FILE")
	}
	if f := env(pg, "POSTGRES_PASSWORD_FILE"); secretAt(pg, f) != "postgres_password" {
		t.Errorf("POSTGRES_PASSWORD_FILE=%q is not the mounted postgres_password secret", f)
	}
	user, db := env(pg, "POSTGRES_USER"), env(pg, "POSTGRES_DB")
	if hc := strings.Join(pg.HealthCheck.Test, " "); !strings.Contains(hc, "pg_isready") || !strings.Contains(hc, "-U "+user) || !strings.Contains(hc, "-d "+db) {
		t.Errorf("postgres health check %q is not pg_isready for %s/%s", hc, user, db)
	}
	if len(pg.Volumes) != 1 || pg.Volumes[0].Type != types.VolumeTypeVolume || pg.Volumes[0].Target != "/var/lib/postgresql/data" {
		t.Errorf("postgres mounts %v, want a named volume at /var/lib/postgresql/data", pg.Volumes)
	}
	// Nothing carries credentials inline (a URL with a password).
	for name, s := range p.Services {
		for k, v := range s.Environment {
			if v != nil && strings.Contains(*v, "@") && strings.Contains(*v, "://") {
				t.Errorf("%s: %s=%q carries credentials inline", name, k, *v)
			}
		}
	}

	// `make secrets`, for real, into a temporary directory.
	dir := t.TempDir()
	pw, dbURL := filepath.Join(dir, "postgres-password"), filepath.Join(dir, "database-url")
	makeSecrets := func() string {
		cmd := exec.Command("make", "-s", "-C", repoRoot(t), "secrets", "SHIP_SECRETS="+pw,
			"POSTGRES_PASSWORD_SECRET="+pw, "DATABASE_URL_SECRET="+dbURL)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make secrets: %v\n%s", err, out)
		}
		return string(out)
	}
	makeSecrets()
	password, u := string(readAbs(t, pw)), readAbs(t, dbURL)
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(password) {
		t.Errorf("postgres password %q is not 32 random bytes in hex", password)
	}
	parsed, err := url.Parse(string(u))
	if err != nil {
		t.Fatalf("database-url: %v", err)
	}
	got, _ := parsed.User.Password()
	host, port, _ := net.SplitHostPort(parsed.Host)
	if parsed.Scheme != "postgres" || parsed.User.Username() != user || got != password || strings.TrimPrefix(parsed.Path, "/") != db {
		t.Errorf("database-url %s: want postgres://%s:<postgres-password>@…/%s", parsed.Redacted(), user, db)
	}
	if n, _ := strconv.Atoi(port); host != "postgres" || !listens(pg, uint32(n)) {
		t.Errorf("database-url names %s:%s, want the postgres service on a port it exposes", host, port)
	}
	for name, fi := range map[string]string{"postgres-password": pw, "database-url": dbURL} {
		if st, err := os.Stat(fi); err != nil || st.Mode().Perm() != 0o644 {
			t.Errorf("%s: %v %v, want mode 0644 (read by the containers' non-root users)", name, st.Mode(), err)
		}
	}
	if out := makeSecrets(); out != "" {
		t.Errorf("a second make secrets rewrote %q", out)
	}
	// A new password (rotation: delete it) rewrites the URL.
	if err := os.Remove(pw); err != nil {
		t.Fatal(err)
	}
	makeSecrets()
	if again := readAbs(t, dbURL); string(again) == string(u) || !strings.Contains(string(again), ":"+string(readAbs(t, pw))+"@") {
		t.Errorf("after a new password the URL is %q", again)
	}
}

func readAbs(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Prometheus scrapes every replica (not the load balancers, which would
// show one replica per scrape) with deploy/compose/prometheus-postgres.yml,
// which is monitoring/prometheus.yml but for those targets.
func TestComposePostgresPrometheus(t *testing.T) {
	p := postgresProject(t)
	prom := p.Services["prometheus"]
	cfgPath := flagValue(prom.Command, "--config.file")
	if src := mountedFrom(t, prom, cfgPath); src != "deploy/compose/prometheus-postgres.yml" {
		t.Fatalf("prometheus --config.file=%s is mounted from %q, want deploy/compose/prometheus-postgres.yml", cfgPath, src)
	}
	if src := mountedFrom(t, prom, "/etc/prometheus/alerts.yml"); src != "monitoring/alerts.yml" {
		t.Errorf("alerts.yml is mounted from %q, want monitoring/alerts.yml", src)
	}
	var scaled, single map[string]any
	for file, into := range map[string]*map[string]any{"deploy/compose/prometheus-postgres.yml": &scaled, "monitoring/prometheus.yml": &single} {
		if err := yaml.Unmarshal(readFile(t, file), into); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	jobs, _ := scaled["scrape_configs"].([]any)
	for _, j := range jobs {
		job, _ := j.(map[string]any)
		name, _ := job["job_name"].(string)
		var targets []string
		for _, sc := range job["static_configs"].([]any) {
			for _, target := range sc.(map[string]any)["targets"].([]any) {
				targets = append(targets, serviceAddr(t, p, "scrape job "+name, target.(string), "prometheus"))
			}
		}
		if replicas, ok := replicasOf[name]; ok {
			if !slices.Equal(targets, replicas) {
				t.Errorf("scrape job %s targets %v, want every replica %v", name, targets, replicas)
			}
			// Compare the rest with monitoring/prometheus.yml.
			job["static_configs"] = []any{map[string]any{"targets": []any{name + ":" + strconv.Itoa(int(contractPorts[name]))}}}
		}
	}
	if !reflect.DeepEqual(scaled, single) {
		t.Errorf("deploy/compose/prometheus-postgres.yml differs from monitoring/prometheus.yml beyond the replicas' targets:\n%v\n%v", scaled, single)
	}
}

// Alertmanager's webhook (monitoring/alertmanager.yml, unchanged) reaches
// the trainer load balancer, whose replicas read the token it sends.
func TestComposePostgresAlertmanager(t *testing.T) {
	checkAlertmanager(t, postgresProject(t), replicasOf["trainer"]...)
}

// localPostgresEnv adds the scaled stack's variables to localEnv.
func localPostgresEnv() map[string]string {
	env := map[string]string{
		"FLYWHEEL_LOCAL_POSTGRES_IMAGE": "flywheel-local/postgres:k7",
		"FLYWHEEL_LOCAL_HAPROXY_IMAGE":  "flywheel-local/haproxy:k8",
		"FLYWHEEL_SERVE_A_PORT":         "41081",
		"FLYWHEEL_SERVE_B_PORT":         "41082",
		"FLYWHEEL_TRAINER_A_PORT":       "41091",
		"FLYWHEEL_TRAINER_B_PORT":       "41092",
		"FLYWHEEL_POSTGRES_PORT":        "41432",
	}
	for k, v := range localEnv {
		env[k] = v
	}
	return env
}

// localPostgresFiles are the files the container test runs the scaled stack with.
var localPostgresFiles = []string{"docker-compose.yml", "deploy/compose/local.yml", postgresOverride, "deploy/compose/local-postgres.yml"}

// The scaled stack as the container test runs it: every service on the
// host's network with a local image, on 127.0.0.1 and its own port, probed
// there; the load balancers and Prometheus point at the replicas' ports.
func TestComposePostgresLocalOverride(t *testing.T) {
	envs := localPostgresEnv()
	p := loadCompose(t, envs, "flywheel-test", localPostgresFiles...)
	ports := map[string]string{}
	for name, s := range p.Services {
		if s.NetworkMode != "host" || len(s.Ports) > 0 {
			t.Errorf("%s: network_mode %q, ports %v; want host and none", name, s.NetworkMode, s.Ports)
		}
		if !strings.HasPrefix(s.Image, "flywheel-local/") {
			t.Errorf("%s: image %q is not a local image", name, s.Image)
		}
		key := "FLYWHEEL_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")) + "_PORT"
		port := envs[key]
		if port == "" {
			t.Errorf("%s has no %s", name, key)
			continue
		}
		if other, dup := ports[port]; dup {
			t.Errorf("%s and %s share port %s", name, other, port)
		}
		ports[port] = name
		bind := "127.0.0.1:" + port
		hc := strings.Join(s.HealthCheck.Test, " ")
		if !strings.Contains(hc, "http://"+bind+"/") && !strings.Contains(hc, "-h 127.0.0.1 -p "+port) {
			t.Errorf("%s: health check %q does not probe %s", name, hc, bind)
		}
		listen := env(s, "FLYWHEEL_LISTEN") == bind || env(s, "LB_BIND") == bind
		for _, a := range s.Command {
			listen = listen || strings.HasSuffix(a, "="+bind) || a == "port="+port && containsArg(s.Command, "listen_addresses=127.0.0.1") ||
				a == "--port="+port && containsArg(s.Command, "--host=127.0.0.1")
		}
		if !listen {
			t.Errorf("%s does not listen on %s only: command %v", name, bind, s.Command)
		}
	}
	for lb, replicas := range replicasOf {
		for i, r := range replicas {
			k := "LB_SERVER_" + string(rune('A'+i))
			if got, want := env(p.Services[lb], k), "127.0.0.1:"+envs["FLYWHEEL_"+strings.ToUpper(strings.ReplaceAll(r, "-", "_"))+"_PORT"]; got != want {
				t.Errorf("%s %s=%q, want %s's %s", lb, k, got, r, want)
			}
		}
	}
	for _, r := range replicasOf["trainer"] {
		if got, want := env(p.Services[r], "FLYWHEEL_SERVE_URL"), "http://127.0.0.1:"+envs["FLYWHEEL_SERVE_PORT"]; got != want {
			t.Errorf("%s FLYWHEEL_SERVE_URL=%q, want the serve load balancer %s", r, got, want)
		}
	}
	if src := mountedFromAbs(p.Services["prometheus"], "/etc/prometheus/prometheus.yml"); src != envs["FLYWHEEL_TEST_CONFIG"]+"/prometheus.yml" {
		t.Errorf("prometheus config from %q, want the test's rendering", src)
	}
	for name, sec := range p.Secrets {
		if !strings.HasPrefix(sec.File, envs["FLYWHEEL_TEST_CONFIG"]+"/") {
			t.Errorf("secret %s from %s, want the test's directory", name, sec.File)
		}
	}
}

// mountedFromAbs returns the host path bind-mounted at target in s.
func mountedFromAbs(s types.ServiceConfig, target string) string {
	for _, m := range s.Volumes {
		if m.Type == types.VolumeTypeBind && m.Target == target {
			return m.Source
		}
	}
	return ""
}
