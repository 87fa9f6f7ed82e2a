package deploy

import (
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"sigs.k8s.io/yaml"
)

// composeProject loads docker-compose.yml with the compose-spec library
// (schema validation, interpolation, normalisation and consistency checks,
// as `docker compose config` does), every profile enabled.
func composeProject(t *testing.T, env map[string]string) *types.Project {
	t.Helper()
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, "docker-compose.yml")}},
		Environment: env,
	}, loader.WithProfiles([]string{"*"}))
	if err != nil {
		t.Fatalf("loading docker-compose.yml: %v", err)
	}
	return p
}

// longRunning are the services `docker compose up` starts.
var longRunning = []string{"serve", "trainer", "mlflow", "prometheus", "alertmanager", "grafana"}

func TestComposeLoads(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		bind string
	}{
		{"defaults", map[string]string{}, "127.0.0.1"},
		{"all interfaces", map[string]string{"FLYWHEEL_BIND": "0.0.0.0", "FLYWHEEL_VERSION": "1.2.3"}, "0.0.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := composeProject(t, tc.env)
			if p.Name != "flywheel" {
				t.Errorf("project name %q, want flywheel", p.Name)
			}
			for _, name := range longRunning {
				s, ok := p.Services[name]
				if !ok {
					t.Errorf("no service %q", name)
					continue
				}
				if len(s.Profiles) != 0 {
					t.Errorf("service %s is behind profiles %v: `docker compose up` would not start it", name, s.Profiles)
				}
				for _, port := range s.Ports {
					if port.HostIP != tc.bind {
						t.Errorf("service %s publishes on %q, want %q (FLYWHEEL_BIND)", name, port.HostIP, tc.bind)
					}
				}
			}
			if img := p.Services["serve"].Image; tc.env["FLYWHEEL_VERSION"] != "" && !strings.HasSuffix(img, ":"+tc.env["FLYWHEEL_VERSION"]) {
				t.Errorf("serve image %q does not follow FLYWHEEL_VERSION", img)
			}
		})
	}
}

func TestComposeImagesPinned(t *testing.T) {
	p := composeProject(t, nil)
	for name, s := range p.Services {
		if s.Image == "" {
			t.Errorf("service %s has no image", name)
			continue
		}
		if !imagePinned(s.Image) {
			t.Errorf("service %s: image %q is not pinned to a tag or digest", name, s.Image)
		}
		if s.Build != nil && !strings.HasPrefix(s.Image, "ghcr.io/flywheel-ml/flywheel:") {
			t.Errorf("service %s builds the Dockerfile but tags it %q", name, s.Image)
		}
		if s.Build != nil && s.Build.Dockerfile != "Dockerfile" {
			t.Errorf("service %s builds %q, want the repository Dockerfile", name, s.Build.Dockerfile)
		}
	}
}

func TestComposeHealthAndDependencies(t *testing.T) {
	p := composeProject(t, nil)
	for _, name := range longRunning {
		s := p.Services[name]
		if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) < 2 {
			t.Errorf("service %s has no healthcheck", name)
		}
		if s.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("service %s restart %q, want unless-stopped", name, s.Restart)
		}
	}
	// The loop's start order: Alertmanager before Prometheus before Grafana;
	// serve healthy before the trainer (which fetches feedback from it).
	want := map[string]map[string]string{
		"trainer":    {"serve": types.ServiceConditionHealthy, "mlflow": types.ServiceConditionStarted},
		"prometheus": {"alertmanager": types.ServiceConditionHealthy},
		"grafana":    {"prometheus": types.ServiceConditionHealthy},
	}
	for svc, deps := range want {
		for dep, cond := range deps {
			if got := p.Services[svc].DependsOn[dep].Condition; got != cond {
				t.Errorf("%s depends_on %s: condition %q, want %q", svc, dep, got, cond)
			}
		}
	}
	for name, s := range p.Services {
		for dep, d := range s.DependsOn {
			if d.Condition == types.ServiceConditionHealthy {
				if hc := p.Services[dep].HealthCheck; hc == nil || hc.Disable {
					t.Errorf("%s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
				}
			}
		}
	}
	// Our services' health checks probe the contract's routes.
	for name, routes := range map[string][]string{"serve": serveRoutes, "trainer": trainerRoutes} {
		s := p.Services[name]
		if s.HealthCheck == nil {
			continue
		}
		u := lastURL(s.HealthCheck.Test)
		if u == nil || u.Port() != strconv.Itoa(int(contractPorts[name])) || !hasRoute(routes, u.Path) {
			t.Errorf("%s healthcheck %v does not probe one of its routes %v on :%d", name, s.HealthCheck.Test, routes, contractPorts[name])
		}
		if listen := env(s, "FLYWHEEL_LISTEN"); listen != ":"+strconv.Itoa(int(contractPorts[name])) {
			t.Errorf("%s FLYWHEEL_LISTEN=%q, want :%d", name, listen, contractPorts[name])
		}
	}
}

func lastURL(args []string) *url.URL {
	for i := len(args) - 1; i >= 0; i-- {
		if u, err := url.Parse(args[i]); err == nil && u.Scheme == "http" {
			return u
		}
	}
	return nil
}

func env(s types.ServiceConfig, key string) string {
	if v := s.Environment[key]; v != nil {
		return *v
	}
	return ""
}

// Only the user-facing ports are published; the trainer is internal.
func TestComposePorts(t *testing.T) {
	p := composeProject(t, nil)
	published := map[string][]uint32{}
	for name, s := range p.Services {
		for _, port := range s.Ports {
			published[name] = append(published[name], port.Target)
			if port.Published != strconv.Itoa(int(port.Target)) {
				t.Errorf("%s publishes container port %d on host port %s; the documented ports are the container ports", name, port.Target, port.Published)
			}
		}
	}
	want := map[string][]uint32{"serve": {8080}, "mlflow": {5000}, "prometheus": {9090}, "alertmanager": {9093}, "grafana": {3000}}
	for name, ports := range want {
		if len(published[name]) != 1 || published[name][0] != ports[0] {
			t.Errorf("%s publishes %v, want %v", name, published[name], ports)
		}
	}
	for name, ports := range published {
		if _, ok := want[name]; !ok {
			t.Errorf("%s publishes %v but is not user-facing", name, ports)
		}
	}
	for name, port := range contractPorts {
		if !listens(p.Services[name], port) {
			t.Errorf("%s does not expose its contract port %d", name, port)
		}
	}
}

// listens reports whether the service declares the container port (expose
// or ports).
func listens(s types.ServiceConfig, port uint32) bool {
	for _, e := range s.Expose {
		if e == strconv.Itoa(int(port)) || e == strconv.Itoa(int(port))+"/tcp" {
			return true
		}
	}
	for _, p := range s.Ports {
		if p.Target == port {
			return true
		}
	}
	return false
}

func TestComposeVolumes(t *testing.T) {
	p := composeProject(t, nil)
	for _, v := range []string{"models", "data", "state", "mlflow", "prometheus"} {
		if _, ok := p.Volumes[v]; !ok {
			t.Errorf("no named volume %q", v)
		}
	}
	mount := func(svc, volume string) string {
		for _, m := range p.Services[svc].Volumes {
			if m.Type == types.VolumeTypeVolume && m.Source == volume {
				return m.Target
			}
		}
		return ""
	}
	// serve and trainer share the model repository: the trainer publishes,
	// serve hot-reloads.
	serveModels, trainerModels := mount("serve", "models"), mount("trainer", "models")
	if serveModels == "" || serveModels != trainerModels {
		t.Errorf("serve mounts models at %q, trainer at %q: they must share the model-repository volume", serveModels, trainerModels)
	}
	for _, svc := range []string{"serve", "trainer"} {
		if got := env(p.Services[svc], "FLYWHEEL_MODELS"); got != serveModels {
			t.Errorf("%s FLYWHEEL_MODELS=%q, but the models volume is at %q", svc, got, serveModels)
		}
		// Relative paths resolve in the image's WORKDIR: the dataset and
		// trainer work under data/, SQLite files under var/.
		if got := mount(svc, "data"); got != "/var/lib/flywheel/data" {
			t.Errorf("%s mounts the data volume at %q, want /var/lib/flywheel/data", svc, got)
		}
		if got := mount(svc, "state"); got != "/var/lib/flywheel/var" {
			t.Errorf("%s mounts the state volume at %q, want /var/lib/flywheel/var", svc, got)
		}
	}
	if mount("mlflow", "mlflow") == "" || mount("prometheus", "prometheus") == "" {
		t.Error("mlflow and prometheus must keep their stores on their named volumes")
	}
	// MLflow: SQLite backend store and proxied artifacts, both on its volume.
	cmd := strings.Join(p.Services["mlflow"].Command, " ")
	mlflowDir := mount("mlflow", "mlflow")
	for _, want := range []string{"--backend-store-uri=sqlite:///" + mlflowDir + "/", "--serve-artifacts", "--artifacts-destination=" + mlflowDir + "/"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("mlflow command %q lacks %q", cmd, want)
		}
	}
	// Every bind mount comes from the repository and exists.
	root := repoRoot(t)
	for name, s := range p.Services {
		for _, m := range s.Volumes {
			if m.Type != types.VolumeTypeBind {
				continue
			}
			rel, err := filepath.Rel(root, m.Source)
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s bind-mounts %s from outside the repository", name, m.Source)
				continue
			}
			if _, err := os.Stat(m.Source); err != nil {
				t.Errorf("%s bind-mounts %s: %v", name, rel, err)
			}
			if !m.ReadOnly {
				t.Errorf("%s bind-mounts %s read-write; configuration is mounted read-only", name, rel)
			}
		}
	}
}

// Tokens are compose secrets (files), never inline environment values.
func TestComposeSecrets(t *testing.T) {
	p := composeProject(t, nil)
	checkSecrets(t, p)
	// serve's admin token and the trainer's webhook token are distinct.
	serveTok := secretAt(p.Services["serve"], env(p.Services["serve"], "FLYWHEEL_ADMIN_TOKEN_FILE"))
	trainerTok := secretAt(p.Services["trainer"], env(p.Services["trainer"], "FLYWHEEL_TOKEN_FILE"))
	if serveTok == "" || trainerTok == "" || serveTok == trainerTok {
		t.Errorf("serve admin token secret %q and trainer token secret %q must both be set and differ", serveTok, trainerTok)
	}
	if gf := env(p.Services["grafana"], "GF_SECURITY_ADMIN_PASSWORD__FILE"); secretAt(p.Services["grafana"], gf) == "" {
		t.Errorf("grafana admin password is not read from a secret file (GF_SECURITY_ADMIN_PASSWORD__FILE=%q)", gf)
	}
}

// checkSecrets: every secret is a git-ignored file, every service uses
// declared secrets only, and every secret-like variable is a …_FILE naming
// a secret mounted in that service.
func checkSecrets(t *testing.T, p *types.Project) {
	t.Helper()
	root := repoRoot(t)
	for name, sec := range p.Secrets {
		if sec.File == "" || sec.Environment != "" || sec.Content != "" {
			t.Errorf("secret %s must come from a file (file: …), not environment or content", name)
			continue
		}
		rel, _ := filepath.Rel(root, sec.File)
		// The token files are never committed.
		out, err := exec.Command("git", "-C", root, "check-ignore", "-q", "--no-index", rel).CombinedOutput()
		if err != nil {
			t.Errorf("secret file %s is not ignored by git (%v %s)", rel, err, out)
		}
	}
	for name, s := range p.Services {
		targets := map[string]string{}
		for _, ref := range s.Secrets {
			if _, ok := p.Secrets[ref.Source]; !ok {
				t.Errorf("%s uses undeclared secret %s", name, ref.Source)
			}
			target := ref.Target
			if target == "" {
				target = ref.Source
			}
			if !path.IsAbs(target) {
				target = "/run/secrets/" + target
			}
			targets[target] = ref.Source
		}
		for k, v := range s.Environment {
			if !secretish.MatchString(k) || v == nil {
				continue
			}
			if !strings.HasSuffix(k, "_FILE") {
				t.Errorf("%s sets %s inline: tokens go in secrets files (…_FILE=/run/secrets/…)", name, k)
				continue
			}
			if _, ok := targets[*v]; !ok {
				t.Errorf("%s: %s=%s is not a mounted secret (mounted: %v)", name, k, *v, keys(targets))
			}
		}
	}
}

// secretAt returns the secret mounted at target in s, or "".
func secretAt(s types.ServiceConfig, target string) string {
	for _, ref := range s.Secrets {
		t := ref.Target
		if t == "" {
			t = ref.Source
		}
		if !path.IsAbs(t) {
			t = "/run/secrets/" + t
		}
		if t == target && target != "" {
			return ref.Source
		}
	}
	return ""
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// flagValue returns the value of --name=value or --name value in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if strings.HasPrefix(a, name+"=") {
			return strings.TrimPrefix(a, name+"=")
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// mountedFrom returns the repository file (relative) mounted at target in s.
func mountedFrom(t *testing.T, s types.ServiceConfig, target string) string {
	t.Helper()
	root := repoRoot(t)
	for _, m := range s.Volumes {
		if m.Type != types.VolumeTypeBind {
			continue
		}
		if m.Target == target {
			rel, _ := filepath.Rel(root, m.Source)
			return filepath.ToSlash(rel)
		}
		if strings.HasPrefix(target, m.Target+"/") {
			rel, _ := filepath.Rel(root, filepath.Join(m.Source, strings.TrimPrefix(target, m.Target+"/")))
			return filepath.ToSlash(rel)
		}
	}
	return ""
}

// serviceAddr checks that host:port names a compose service listening on
// that port; self is the service whose loopback "localhost" means.
func serviceAddr(t *testing.T, p *types.Project, where, hostport, self string) string {
	t.Helper()
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Errorf("%s: target %q: %v", where, hostport, err)
		return ""
	}
	if host == "localhost" || host == "127.0.0.1" {
		host = self
	}
	s, ok := p.Services[host]
	if !ok {
		t.Errorf("%s: target %q names no compose service (have %v)", where, hostport, keys(p.Services))
		return ""
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || !listens(s, uint32(port)) {
		t.Errorf("%s: target %q: service %s does not listen on port %s", where, hostport, host, portStr)
	}
	return host
}

// Prometheus: config and rule files are mounted, and every scrape and
// Alertmanager target is a compose service and port.
func TestComposeMatchesPrometheus(t *testing.T) {
	p := composeProject(t, nil)
	prom := p.Services["prometheus"]
	cfgPath := flagValue(prom.Command, "--config.file")
	if src := mountedFrom(t, prom, cfgPath); src != "monitoring/prometheus.yml" {
		t.Fatalf("prometheus --config.file=%s is mounted from %q, want monitoring/prometheus.yml", cfgPath, src)
	}
	var cfg struct {
		RuleFiles []string `json:"rule_files"`
		Alerting  struct {
			Alertmanagers []struct {
				StaticConfigs []struct {
					Targets []string `json:"targets"`
				} `json:"static_configs"`
			} `json:"alertmanagers"`
		} `json:"alerting"`
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(readFile(t, "monitoring/prometheus.yml"), &cfg); err != nil {
		t.Fatalf("monitoring/prometheus.yml: %v", err)
	}
	for _, rf := range cfg.RuleFiles {
		target := rf
		if !path.IsAbs(rf) {
			target = path.Join(path.Dir(cfgPath), rf)
		}
		if src := mountedFrom(t, prom, target); src != path.Join("monitoring", rf) {
			t.Errorf("rule file %s: %s is mounted from %q, want monitoring/%s", rf, target, src, rf)
		}
	}
	scraped := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				scraped[serviceAddr(t, p, "scrape job "+sc.JobName, target, "prometheus")] = true
			}
		}
	}
	for _, svc := range []string{"serve", "trainer"} {
		if !scraped[svc] {
			t.Errorf("prometheus.yml does not scrape %s", svc)
		}
	}
	var ams int
	for _, am := range cfg.Alerting.Alertmanagers {
		for _, st := range am.StaticConfigs {
			for _, target := range st.Targets {
				if serviceAddr(t, p, "alerting", target, "prometheus") == "alertmanager" {
					ams++
				}
			}
		}
	}
	if ams == 0 {
		t.Error("prometheus.yml sends alerts to no alertmanager service")
	}
}

// Alertmanager: every webhook URL is a compose service and port and a real
// trainer route, and its bearer-token file is the trainer's token secret.
func TestComposeMatchesAlertmanager(t *testing.T) {
	checkAlertmanager(t, composeProject(t, nil), "trainer")
}

// checkAlertmanager: every webhook of monitoring/alertmanager.yml is a
// service and port of p, a trainer route when it is the trainer, and its
// bearer token file the token secret of every trainer process (trainers).
func checkAlertmanager(t *testing.T, p *types.Project, trainers ...string) {
	t.Helper()
	am := p.Services["alertmanager"]
	cfgPath := flagValue(am.Command, "--config.file")
	if src := mountedFrom(t, am, cfgPath); src != "monitoring/alertmanager.yml" {
		t.Fatalf("alertmanager --config.file=%s is mounted from %q, want monitoring/alertmanager.yml", cfgPath, src)
	}
	var cfg struct {
		Receivers []struct {
			Name           string `json:"name"`
			WebhookConfigs []struct {
				URL        string `json:"url"`
				HTTPConfig struct {
					Authorization struct {
						Type            string `json:"type"`
						Credentials     string `json:"credentials"`
						CredentialsFile string `json:"credentials_file"`
					} `json:"authorization"`
				} `json:"http_config"`
			} `json:"webhook_configs"`
		} `json:"receivers"`
	}
	if err := yaml.Unmarshal(readFile(t, "monitoring/alertmanager.yml"), &cfg); err != nil {
		t.Fatalf("monitoring/alertmanager.yml: %v", err)
	}
	var hooks int
	for _, r := range cfg.Receivers {
		for _, wh := range r.WebhookConfigs {
			hooks++
			u, err := url.Parse(wh.URL)
			if err != nil {
				t.Errorf("receiver %s: webhook %q: %v", r.Name, wh.URL, err)
				continue
			}
			svc := serviceAddr(t, p, "receiver "+r.Name, u.Host, "alertmanager")
			if svc == "trainer" && !hasRoute(trainerRoutes, u.Path) {
				t.Errorf("receiver %s: %s is not a trainer route %v", r.Name, u.Path, trainerRoutes)
			}
			auth := wh.HTTPConfig.Authorization
			if auth.Credentials != "" {
				t.Errorf("receiver %s: inline credentials; use credentials_file", r.Name)
			}
			if svc != "trainer" {
				continue
			}
			file := auth.CredentialsFile
			if file == "" {
				t.Errorf("receiver %s: the trainer webhook needs a bearer credentials_file", r.Name)
				continue
			}
			if !path.IsAbs(file) {
				file = path.Join(path.Dir(cfgPath), file)
			}
			for _, tr := range trainers {
				trainerToken := secretAt(p.Services[tr], env(p.Services[tr], "FLYWHEEL_TOKEN_FILE"))
				if got := secretAt(am, file); got == "" || got != trainerToken {
					t.Errorf("receiver %s: credentials_file %s is secret %q in alertmanager, %s reads secret %q", r.Name, file, got, tr, trainerToken)
				}
			}
		}
	}
	if hooks == 0 {
		t.Error("alertmanager.yml has no webhook receiver")
	}
}

// Grafana is provisioned from monitoring/grafana: its datasources point at
// compose services and its dashboard folder is mounted where the provider
// looks.
func TestComposeMatchesGrafana(t *testing.T) {
	p := composeProject(t, nil)
	gf := p.Services["grafana"]
	prov := env(gf, "GF_PATHS_PROVISIONING")
	if prov == "" {
		prov = "/etc/grafana/provisioning"
	}
	if src := mountedFrom(t, gf, prov); src != "monitoring/grafana/provisioning" {
		t.Fatalf("grafana provisioning %s is mounted from %q, want monitoring/grafana/provisioning", prov, src)
	}
	root := repoRoot(t)
	dsFiles, _ := filepath.Glob(filepath.Join(root, "monitoring/grafana/provisioning/datasources/*.y*ml"))
	dbFiles, _ := filepath.Glob(filepath.Join(root, "monitoring/grafana/provisioning/dashboards/*.y*ml"))
	if len(dsFiles) == 0 || len(dbFiles) == 0 {
		t.Fatalf("monitoring/grafana/provisioning needs datasources/ and dashboards/ files (found %d, %d)", len(dsFiles), len(dbFiles))
	}
	for _, f := range dsFiles {
		var ds struct {
			Datasources []struct {
				Name string `json:"name"`
				URL  string `json:"url"`
			} `json:"datasources"`
		}
		b, _ := os.ReadFile(f)
		if err := yaml.Unmarshal(b, &ds); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, d := range ds.Datasources {
			u, err := url.Parse(d.URL)
			if err != nil {
				t.Errorf("datasource %s: %v", d.Name, err)
				continue
			}
			serviceAddr(t, p, "grafana datasource "+d.Name, u.Host, "grafana")
		}
	}
	for _, f := range dbFiles {
		var db struct {
			Providers []struct {
				Name    string `json:"name"`
				Options struct {
					Path string `json:"path"`
				} `json:"options"`
			} `json:"providers"`
		}
		b, _ := os.ReadFile(f)
		if err := yaml.Unmarshal(b, &db); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, pr := range db.Providers {
			src := mountedFrom(t, gf, pr.Options.Path)
			if src == "" {
				t.Errorf("dashboard provider %s reads %s, which grafana does not mount", pr.Name, pr.Options.Path)
				continue
			}
			if js, _ := filepath.Glob(filepath.Join(root, src, "*.json")); len(js) == 0 {
				t.Errorf("dashboard provider %s: %s (from %s) holds no dashboards", pr.Name, pr.Options.Path, src)
			}
		}
	}
}
