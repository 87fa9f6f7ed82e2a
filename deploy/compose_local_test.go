package deploy

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// localEnv is what deploy/containers.sh and deploy/containertest set.
var localEnv = map[string]string{
	"FLYWHEEL_TEST_CONFIG":              "/tmp/flywheel-test-config",
	"FLYWHEEL_LOCAL_GO_IMAGE":           "flywheel-local/golang:k1",
	"FLYWHEEL_LOCAL_NODE_IMAGE":         "flywheel-local/node:k2",
	"FLYWHEEL_LOCAL_RUNTIME_IMAGE":      "flywheel-local/debian:k3",
	"FLYWHEEL_LOCAL_PROMETHEUS_IMAGE":   "flywheel-local/prometheus:k4",
	"FLYWHEEL_LOCAL_ALERTMANAGER_IMAGE": "flywheel-local/alertmanager:k5",
	"FLYWHEEL_LOCAL_MLFLOW_IMAGE":       "flywheel-local/mlflow:k6",
	"FLYWHEEL_SERVE_PORT":               "41080",
	"FLYWHEEL_TRAINER_PORT":             "41090",
	"FLYWHEEL_MLFLOW_PORT":              "41500",
	"FLYWHEEL_PROMETHEUS_PORT":          "41909",
	"FLYWHEEL_ALERTMANAGER_PORT":        "41903",
}

// localProject loads docker-compose.yml + deploy/compose/local.yml as the
// container test runs them (default profiles only).
func localProject(t *testing.T, env map[string]string, profiles ...string) *types.Project {
	t.Helper()
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir: root,
		ConfigFiles: []types.ConfigFile{
			{Filename: filepath.Join(root, "docker-compose.yml")},
			{Filename: filepath.Join(root, "deploy", "compose", "local.yml")},
		},
		Environment: env,
	}, func(o *loader.Options) {
		o.SetProjectName("flywheel-test", true)
		o.Profiles = profiles
	})
	if err != nil {
		t.Fatalf("loading docker-compose.yml + deploy/compose/local.yml: %v", err)
	}
	return p
}

// The local override runs every started service on the host's network,
// bound to 127.0.0.1 on its own port, with a local image; it passes the
// Dockerfile's base-image arguments and keeps Grafana out.
func TestComposeLocalOverride(t *testing.T) {
	p := localProject(t, localEnv)
	want := []string{"alertmanager", "mlflow", "prometheus", "serve", "trainer"}
	if got := strings.Join(keys(p.Services), " "); got != strings.Join(want, " ") {
		t.Errorf("the local stack starts %s, want %s (Grafana has no Debian package: behind the grafana profile)", got, strings.Join(want, " "))
	}
	_, metaArgs := dockerfile(t)
	fromArgs := map[string]bool{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if strings.HasSuffix(kv.Key, "_IMAGE") {
				fromArgs[kv.Key] = true
			}
		}
	}
	ports := map[string]string{}
	for name, s := range p.Services {
		if s.NetworkMode != "host" {
			t.Errorf("%s: network_mode %q, want host (the test engine has no bridge)", name, s.NetworkMode)
		}
		if len(s.Ports) > 0 {
			t.Errorf("%s publishes %v; with host networking it binds 127.0.0.1 itself", name, s.Ports)
		}
		if !strings.HasPrefix(s.Image, "flywheel-local/") {
			t.Errorf("%s: image %q is not a local image", name, s.Image)
		}
		port := localEnv["FLYWHEEL_"+strings.ToUpper(name)+"_PORT"]
		if port == "" {
			t.Errorf("%s has no FLYWHEEL_%s_PORT", name, strings.ToUpper(name))
			continue
		}
		if other, dup := ports[port]; dup {
			t.Errorf("%s and %s share port %s", name, other, port)
		}
		ports[port] = name
		// It listens on 127.0.0.1:port (a flag or FLYWHEEL_LISTEN) and its
		// health check probes that address.
		bind := "127.0.0.1:" + port
		listen := env(s, "FLYWHEEL_LISTEN") == bind
		for _, a := range s.Command {
			listen = listen || strings.HasSuffix(a, "="+bind) || a == "--port="+port && containsArg(s.Command, "--host=127.0.0.1")
		}
		if !listen {
			t.Errorf("%s does not listen on %s only: command %v, FLYWHEEL_LISTEN %q", name, bind, s.Command, env(s, "FLYWHEEL_LISTEN"))
		}
		if s.HealthCheck == nil || !strings.Contains(strings.Join(s.HealthCheck.Test, " "), "http://"+bind+"/") {
			t.Errorf("%s: health check does not probe http://%s/", name, bind)
		}
		if s.Build != nil {
			if s.Build.Network != "host" {
				t.Errorf("%s: build network %q, want host (the build fetches Go modules and npm)", name, s.Build.Network)
			}
			for arg := range fromArgs {
				if v := s.Build.Args[arg]; v == nil || !strings.HasPrefix(*v, "flywheel-local/") {
					t.Errorf("%s: build arg %s = %v, want a local image", name, arg, v)
				}
			}
		}
	}
	// The trainer reaches serve and MLflow on their loopback ports.
	tr := p.Services["trainer"]
	for key, svc := range map[string]string{"FLYWHEEL_SERVE_URL": "serve", "MLFLOW_TRACKING_URI": "mlflow"} {
		if got, want := env(tr, key), fmt.Sprintf("http://127.0.0.1:%s", localEnv["FLYWHEEL_"+strings.ToUpper(svc)+"_PORT"]); got != want {
			t.Errorf("trainer %s=%q, want %q", key, got, want)
		}
	}
	// Secrets and rendered configs come from the test's directory.
	for name, sec := range p.Secrets {
		if !strings.HasPrefix(sec.File, localEnv["FLYWHEEL_TEST_CONFIG"]+"/") {
			t.Errorf("secret %s from %s, want the test's directory", name, sec.File)
		}
	}
}

// Without the variables the override refuses to load instead of starting
// a half-configured stack.
func TestComposeLocalOverrideNeedsVariables(t *testing.T) {
	root := repoRoot(t)
	for _, missing := range []string{"FLYWHEEL_LOCAL_GO_IMAGE", "FLYWHEEL_SERVE_PORT", "FLYWHEEL_TEST_CONFIG"} {
		env := map[string]string{}
		for k, v := range localEnv {
			if k != missing {
				env[k] = v
			}
		}
		_, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
			WorkingDir: root,
			ConfigFiles: []types.ConfigFile{
				{Filename: filepath.Join(root, "docker-compose.yml")},
				{Filename: filepath.Join(root, "deploy", "compose", "local.yml")},
			},
			Environment: env,
		}, func(o *loader.Options) { o.SetProjectName("flywheel-test", true) })
		if err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("without %s: err = %v, want one naming it", missing, err)
		}
	}
}

func containsArg(args []string, a string) bool {
	for _, x := range args {
		if x == a {
			return true
		}
	}
	return false
}
