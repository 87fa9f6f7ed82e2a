package deploy

import (
	"context"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// flywheelEnv collects the FLYWHEEL_* variables that compose and the
// Kubernetes manifests set, per subcommand they run.
func flywheelEnv(t *testing.T) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{} // subcommand → var → where
	add := func(cmd, name, where string) {
		if !strings.HasPrefix(name, "FLYWHEEL_") {
			return
		}
		if out[cmd] == nil {
			out[cmd] = map[string]string{}
		}
		out[cmd][name] = where
	}
	p := composeProject(t, nil)
	for name, s := range p.Services {
		if s.Build == nil || len(s.Command) == 0 {
			continue
		}
		cmd := s.Command[0]
		if strings.HasPrefix(cmd, "-") { // the cli service: any subcommand
			cmd = "*"
		}
		for k := range s.Environment {
			add(cmd, k, "compose service "+name)
		}
	}
	m := loadManifests(t)
	for name, d := range m.deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			if len(c.Args) == 0 {
				continue
			}
			for _, e := range c.Env {
				add(c.Args[0], e.Name, "deployment "+name)
			}
		}
	}
	return out
}

// builtCommands are the subcommands that must not be placeholders any more:
// their --help is always checked.
var builtCommands = map[string]bool{"serve": true, "trainer": true, "train": true}

// Every FLYWHEEL_* variable the deployment sets is one the command reads
// (a misspelt variable would be ignored silently): the binary is built and
// each subcommand's --help, which lists every flag's variable, is read.
func TestDeploymentEnvMatchesFlags(t *testing.T) {
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "flywheel")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/flywheel")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/flywheel: %v\n%s", err, out)
	}
	help := map[string]string{}
	placeholder := map[string]bool{}
	for _, cmd := range []string{"serve", "trainer", "train", "replay", "runs"} {
		out, err := exec.CommandContext(ctx, bin, cmd, "--help").CombinedOutput()
		switch {
		case err == nil:
			help[cmd] = string(out)
		case strings.Contains(string(out), "not built yet") && !builtCommands[cmd]:
			placeholder[cmd] = true
		default:
			t.Errorf("flywheel %s --help: %v\n%s", cmd, err, out)
		}
	}
	wanted := flywheelEnv(t)
	cmds := keys(wanted)
	sort.Strings(cmds)
	for _, cmd := range cmds {
		for _, name := range keys(wanted[cmd]) {
			where := wanted[cmd][name]
			var candidates []string
			if cmd == "*" {
				candidates = []string{"train", "replay", "runs"}
			} else {
				candidates = []string{cmd}
			}
			var known, checked bool
			for _, c := range candidates {
				if placeholder[c] {
					continue
				}
				checked = true
				if strings.Contains(help[c], "env "+name) || name == "FLYWHEEL_ORT_LIB" {
					known = true
				}
			}
			switch {
			case !checked:
				// Only while the subcommand is the foundation's placeholder:
				// once it is built its --help is checked like the others.
				t.Logf("%s sets %s for `flywheel %s`, still a placeholder: unchecked", where, name, cmd)
			case !known:
				t.Errorf("%s sets %s, which `flywheel %s --help` does not list", where, name, strings.Join(candidates, "|"))
			}
		}
	}
}
