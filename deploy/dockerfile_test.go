package deploy

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// dockerfile parses the Dockerfile with BuildKit's own parser and linter
// (the code `docker build` runs) and fails on any lint warning.
func dockerfile(t *testing.T) (stages []instructions.Stage, metaArgs []instructions.ArgCommand) {
	t.Helper()
	res, err := parser.Parse(bytes.NewReader(readFile(t, "Dockerfile")))
	if err != nil {
		t.Fatalf("parsing Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile parser warning: %s", w.Short)
	}
	var lints []string
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		lints = append(lints, fmt.Sprintf("line %d: %s: %s", line, rule, msg))
	}})
	stages, metaArgs, err = instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("Dockerfile instructions: %v", err)
	}
	for _, l := range lints {
		t.Errorf("Dockerfile lint: %s", l)
	}
	if len(stages) == 0 {
		t.Fatal("Dockerfile has no stages")
	}
	return stages, metaArgs
}

func stageArg(st instructions.Stage, name string) (string, bool) {
	for _, c := range st.Commands {
		if a, ok := c.(*instructions.ArgCommand); ok {
			for _, kv := range a.Args {
				if kv.Key == name && kv.Value != nil {
					return *kv.Value, true
				}
			}
		}
	}
	return "", false
}

// baseImages maps each stage to its base image with the global ARG defaults
// substituted: every FROM is a build argument (GO_IMAGE, NODE_IMAGE,
// RUNTIME_IMAGE) whose default is the upstream image users build from, and
// which the container test replaces with a local equivalent.
func baseImages(t *testing.T, stages []instructions.Stage, metaArgs []instructions.ArgCommand) map[string]string {
	t.Helper()
	defaults := map[string]string{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				defaults[kv.Key] = *kv.Value
			}
		}
	}
	out := map[string]string{}
	for _, st := range stages {
		base := st.BaseName
		if m := fromArg.FindStringSubmatch(base); m != nil {
			v, ok := defaults[m[1]]
			if !ok {
				t.Errorf("stage %q: FROM %s names an ARG without a default", st.Name, base)
			}
			base = v
		} else if !strings.Contains(base, "$") && !isStage(stages, base) {
			t.Errorf("stage %q: FROM %s is not a build argument: the container test cannot replace it", st.Name, base)
		}
		out[st.Name] = base
	}
	return out
}

var fromArg = regexp.MustCompile(`^\$\{?([A-Z_]+)\}?$`)

func isStage(stages []instructions.Stage, name string) bool {
	for _, st := range stages {
		if st.Name == name {
			return true
		}
	}
	return false
}

func TestDockerfileStages(t *testing.T) {
	stages, metaArgs := dockerfile(t)
	bases := baseImages(t, stages, metaArgs)
	names := map[string]instructions.Stage{}
	for _, st := range stages {
		names[st.Name] = st
		if b := bases[st.Name]; !imagePinned(b) && !isStage(stages, b) {
			t.Errorf("stage %q: base image %q is not pinned to a tag or digest", st.Name, b)
		}
	}
	for _, want := range []string{"build", "ort", "runtime"} {
		if _, ok := names[want]; !ok {
			t.Errorf("no stage %q (multi-stage build: Go with cgo, ONNX Runtime, runtime)", want)
		}
	}
	if b := bases["build"]; !strings.HasPrefix(b, "golang:") {
		t.Errorf("build stage base %q, want an official golang image", b)
	}
	if r := stages[len(stages)-1]; r.Name != "runtime" || !strings.HasPrefix(bases[r.Name], "debian:") || !strings.Contains(bases[r.Name], "slim") {
		t.Errorf("final stage %q FROM %q, want runtime FROM a debian slim image", r.Name, bases[r.Name])
	}
	var cgo bool
	for _, c := range names["build"].Commands {
		if r, ok := c.(*instructions.RunCommand); ok && strings.Contains(strings.Join(r.CmdLine, " "), "CGO_ENABLED=1 go build") {
			cgo = true
		}
	}
	if !cgo {
		t.Error("build stage does not run `CGO_ENABLED=1 go build` (onnxruntime_go and go-sqlite3 need cgo)")
	}
}

// The image must carry the same ONNX Runtime as `make deps`.
func TestDockerfileORTMatchesMakefile(t *testing.T) {
	stages, _ := dockerfile(t)
	var ort *instructions.Stage
	for i := range stages {
		if stages[i].Name == "ort" {
			ort = &stages[i]
		}
	}
	if ort == nil {
		t.Fatal("no ort stage")
	}
	for arg, makeName := range map[string]string{"ORT_VERSION": "ORT_VERSION", "ORT_SHA256": "ORT_SHA256"} {
		got, ok := stageArg(*ort, arg)
		if !ok {
			t.Errorf("ort stage has no ARG %s with a default", arg)
			continue
		}
		if want := makeVar(t, makeName); got != want {
			t.Errorf("Dockerfile ARG %s=%s, Makefile %s := %s", arg, got, makeName, want)
		}
	}
	var run string
	for _, c := range ort.Commands {
		if r, ok := c.(*instructions.RunCommand); ok {
			run += strings.Join(r.CmdLine, " ")
		}
	}
	for _, want := range []string{
		`npm pack --silent "onnxruntime-node@${ORT_VERSION}"`,
		"package/bin/napi-v6/linux/x64/libonnxruntime.so.1",
		"sha256sum -c",
	} {
		if !strings.Contains(run, want) {
			t.Errorf("ort stage does not do %q as `make deps` does", want)
		}
	}
	mk := string(readFile(t, "Makefile"))
	if !strings.Contains(mk, "npm pack --silent onnxruntime-node@$(ORT_VERSION)") || !strings.Contains(mk, "package/bin/napi-v6/linux/x64/libonnxruntime.so.1") {
		t.Error("Makefile deps no longer fetches package/bin/napi-v6/linux/x64/libonnxruntime.so.1 with npm pack: update the Dockerfile's ort stage with it")
	}
}

func TestDockerfileRuntime(t *testing.T) {
	stages, _ := dockerfile(t)
	rt := stages[len(stages)-1]
	var (
		user         string
		workdir      string
		exposed      = map[string]bool{}
		health       *instructions.HealthCheckCommand
		entrypoint   []string
		labels       = map[string]string{}
		ortFromOrt   bool
		binFromBuild bool
	)
	for _, c := range rt.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.WorkdirCommand:
			workdir = c.Path
		case *instructions.ExposeCommand:
			for _, p := range c.Ports {
				exposed[strings.TrimSuffix(p, "/tcp")] = true
			}
		case *instructions.HealthCheckCommand:
			health = c
		case *instructions.EntrypointCommand:
			entrypoint = c.CmdLine
			if c.PrependShell {
				t.Error("ENTRYPOINT in shell form: use the exec form so signals reach flywheel")
			}
		case *instructions.LabelCommand:
			for _, kv := range c.Labels {
				labels[kv.Key] = kv.Value
			}
		case *instructions.CopyCommand:
			for _, src := range c.SourcePaths {
				if c.From == "ort" && strings.HasSuffix(src, "libonnxruntime.so.1") {
					ortFromOrt = true
				}
				if c.From == "build" && strings.HasSuffix(src, "/flywheel") {
					binFromBuild = true
				}
			}
		}
	}
	for _, svc := range []string{"serve", "trainer"} {
		if p := strconv.Itoa(int(contractPorts[svc])); !exposed[p] {
			t.Errorf("runtime does not EXPOSE %s's port %s", svc, p)
		}
	}
	// compose and the Kubernetes manifests mount models/, data/ and var/ here.
	if workdir != "/var/lib/flywheel" {
		t.Errorf("runtime WORKDIR %q, want /var/lib/flywheel (compose and Kubernetes mount models/, data/, var/ there)", workdir)
	}
	if user == "" {
		t.Error("runtime stage has no USER: the image would run as root")
	}
	uid := strings.SplitN(user, ":", 2)[0]
	if uid == "root" || uid == "0" {
		t.Errorf("USER %q is root", user)
	}
	if strings.Trim(uid, "0123456789") != "" {
		t.Errorf("USER %q is not numeric: Kubernetes runAsNonRoot can only verify a numeric uid", user)
	}
	if health == nil || len(health.Health.Test) < 2 || health.Health.Test[0] == "NONE" {
		t.Error("runtime stage has no HEALTHCHECK")
	} else if !strings.Contains(strings.Join(health.Health.Test, " "), "HEALTHCHECK_URL") {
		t.Errorf("HEALTHCHECK %v does not probe $HEALTHCHECK_URL", health.Health.Test)
	}
	if len(entrypoint) != 1 || entrypoint[0] != "flywheel" {
		t.Errorf("ENTRYPOINT %v, want [flywheel] so one image runs serve, trainer, train and replay", entrypoint)
	}
	for _, k := range []string{"title", "description", "source", "version", "revision", "created"} {
		if labels["org.opencontainers.image."+k] == "" {
			t.Errorf("no OCI label org.opencontainers.image.%s", k)
		}
	}
	if !ortFromOrt {
		t.Error("runtime does not COPY libonnxruntime.so.1 --from=ort")
	}
	if !binFromBuild {
		t.Error("runtime does not COPY the flywheel binary --from=build")
	}
	// The health check's default URL is a real serve route.
	for _, c := range rt.Commands {
		if e, ok := c.(*instructions.EnvCommand); ok {
			for _, kv := range e.Env {
				if kv.Key == "HEALTHCHECK_URL" {
					path := kv.Value[strings.Index(kv.Value, ":8080")+len(":8080"):]
					if !strings.Contains(kv.Value, ":8080/") || !hasRoute(serveRoutes, path) {
						t.Errorf("HEALTHCHECK_URL=%s is not a serve route on :8080", kv.Value)
					}
				}
			}
		}
	}
}

// No ARG or ENV may bake a secret into the image (layers and `docker
// history` keep them).
func TestDockerfileNoSecrets(t *testing.T) {
	stages, metaArgs := dockerfile(t)
	check := func(where, key string, value *string) {
		if secretish.MatchString(key) && value != nil && *value != "" {
			t.Errorf("%s: %s carries a value: pass tokens at run time (files/secrets), never in the image", where, key)
		}
	}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			check("global ARG", kv.Key, kv.Value)
		}
	}
	for _, st := range stages {
		for _, c := range st.Commands {
			switch c := c.(type) {
			case *instructions.ArgCommand:
				for _, kv := range c.Args {
					check("stage "+st.Name+" ARG", kv.Key, kv.Value)
				}
			case *instructions.EnvCommand:
				for _, kv := range c.Env {
					v := kv.Value
					check("stage "+st.Name+" ENV", kv.Key, &v)
				}
			case *instructions.CopyCommand:
				for _, src := range c.SourcePaths {
					if strings.Contains(src, "secret") {
						t.Errorf("stage %s copies %s into the image", st.Name, src)
					}
				}
			}
		}
	}
	// The build context never carries the token files either.
	ignore := string(readFile(t, ".dockerignore"))
	for _, want := range []string{"**/secrets", ".git", "lib", "bin"} {
		if !strings.Contains("\n"+ignore+"\n", "\n"+want+"\n") {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
}
