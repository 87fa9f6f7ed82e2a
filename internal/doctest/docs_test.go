package doctest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/server/ort"
)

// ReportEnv names the file the document test writes its counts to (mk/doctest.mk
// prints it at the end of make test).
const ReportEnv = "FLYWHEEL_DOCTEST_REPORT"

// documents returns README.md and docs/*.md of the repository, README first.
func documents(t *testing.T, root string) []string {
	t.Helper()
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(docs)
	return append([]string{filepath.Join(root, "README.md")}, docs...)
}

// scratch is the folder the blocks run in: bin/flywheel, data/ (the
// repository's), a copy of models/ that the server serves, and
// secrets/admin-token, the server's admin token.
type scratch struct {
	dir    string
	runner Runner
	serve  *harness.Process
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-R", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -R %s %s: %v\n%s", from, to, err, out)
	}
}

func newScratch(t *testing.T, root string) *scratch {
	t.Helper()
	bin := harness.BuildFlywheel(t)
	dir := t.TempDir()
	for _, d := range []string{"bin", "secrets", "var", ".doctest"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyDir(t, bin, filepath.Join(dir, "bin", "flywheel"))
	copyDir(t, filepath.Join(root, "models"), filepath.Join(dir, "models"))
	if err := os.Symlink(filepath.Join(root, "data"), filepath.Join(dir, "data")); err != nil {
		t.Fatal(err)
	}
	token := filepath.Join(dir, "secrets", "admin-token")
	if err := os.WriteFile(token, []byte("doctest-admin-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	// curl fails on an HTTP error status, so a block that gets a 4xx fails
	// unless it is fenced "sh fails".
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal(err)
	}
	shim := fmt.Sprintf("#!/bin/sh\nexec %s --fail-with-body \"$@\"\n", curl)
	if err := os.WriteFile(filepath.Join(dir, ".doctest", "curl"), []byte(shim), 0o755); err != nil {
		t.Fatal(err)
	}
	lib, err := ort.FindLibrary("")
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(lib) {
		lib = filepath.Join(root, lib)
	}
	env := []string{ort.EnvVar + "=" + lib, "PATH=" + filepath.Join(dir, ".doctest") + ":" + os.Getenv("PATH")}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FLYWHEEL_") && !strings.HasPrefix(kv, "MLFLOW_") && !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	addr := harness.FreeAddr(t)
	serve := harness.StartFlywheel(t, bin, "serve", addr, "/v2/health/ready",
		"--models", filepath.Join(dir, "models"), "--listen", addr,
		"--predlog-db", filepath.Join(dir, "var", "flywheel.db"), "--admin-token-file", token)
	return &scratch{dir: dir, serve: serve, runner: Runner{Dir: dir, Env: env,
		Replace: map[string]string{"localhost:8080": addr, "127.0.0.1:8080": addr}}}
}

// TestDocumentExamples runs every sh/bash block of README.md and docs/*.md
// against a real flywheel serve on the shipped models and compares the output
// blocks; then it breaks the Quickstart in a scratch copy and checks that the
// runner fails it.
func TestDocumentExamples(t *testing.T) {
	root := harness.RepoRoot(t)
	s := newScratch(t, root)
	ctx := context.Background()

	var run, norun, compared, failed int
	var perFile []string
	for _, path := range documents(t, root) {
		name, _ := filepath.Rel(root, path)
		text, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blocks, err := Extract(name, string(text))
		if err != nil {
			t.Errorf("%v", err)
		}
		fileRun := 0
		for _, b := range blocks {
			if !b.Runs() {
				norun++
				continue
			}
			run++
			fileRun++
			if b.Want != nil {
				compared++
			}
			if res := s.runner.Run(ctx, b); res.Err != nil {
				failed++
				t.Errorf("%v", res.Err)
			}
		}
		if len(blocks) > 0 {
			perFile = append(perFile, fmt.Sprintf("%s %d/%d", name, fileRun, len(blocks)))
		}
	}
	report := fmt.Sprintf("doc tests: %d shell blocks of README.md and docs/*.md run against flywheel serve (%d with their output compared), %d failing; %d fenced norun\n  run/total per file: %s\n",
		run, compared, failed, norun, strings.Join(perFile, ", "))
	t.Log(report)
	if p := os.Getenv(ReportEnv); p != "" {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
			_ = os.WriteFile(p, []byte(report), 0o644)
		}
	}
	if run == 0 || compared == 0 {
		t.Errorf("no block ran or none had its output compared")
	}

	t.Run("broken example fails", func(t *testing.T) {
		text, err := os.ReadFile(filepath.Join(root, "README.md"))
		if err != nil {
			t.Fatal(err)
		}
		blocks, err := Extract("README.md", string(text))
		if err != nil {
			t.Fatal(err)
		}
		var first *Block
		for i := range blocks {
			if blocks[i].Runs() && blocks[i].Want != nil && strings.Contains(blocks[i].Script, "/infer") {
				first = &blocks[i]
				break
			}
		}
		if first == nil {
			t.Fatal("README.md has no infer example with an output block")
		}
		if res := s.runner.Run(ctx, *first); res.Err != nil {
			t.Fatalf("the unbroken example fails: %v", res.Err)
		}
		num := regexp.MustCompile(`"data":\[(\d+\.\d+)\]`)
		m := num.FindStringSubmatch(first.Want.Text)
		if m == nil {
			t.Fatalf("no forecast in the output block %q", first.Want.Text)
		}
		wrongAnswer := *first
		shown, _ := strconv.ParseFloat(m[1], 64)
		wrongAnswer.Want = &Output{Line: first.Want.Line, Text: strings.Replace(first.Want.Text, m[1], strconv.FormatFloat(shown+0.5, 'f', 2, 64), 1)}
		wrongRequest := *first
		wrongRequest.Script = strings.Replace(first.Script, `"shape": [1, 66]`, `"shape": [1, 65]`, 1)
		if wrongRequest.Script == first.Script {
			t.Fatal(`the infer example has no "shape": [1, 66] to break`)
		}
		for name, b := range map[string]Block{"answer shown": wrongAnswer, "request": wrongRequest} {
			res := s.runner.Run(ctx, b)
			if res.Err == nil {
				t.Errorf("breaking the %s of %s did not fail it (output %q)", name, b.Where(), res.Output)
			} else {
				t.Logf("broken %s fails as it should: %v", name, res.Err)
			}
		}
	})
}

var (
	makeTargetRe = regexp.MustCompile(`(?m)(?:^|[\s;&(|])make[ \t]+((?:[a-z0-9][a-z0-9_.-]*(?:[ \t]+|$))+)`)
	codeSpanRe   = regexp.MustCompile("`([^`\n]+)`")
)

// codeText is the code of a Markdown text: fenced blocks and inline code spans, one per line.
func codeText(t *testing.T, text string) string {
	t.Helper()
	fs, err := fences(text)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(f.text)
	}
	for _, m := range codeSpanRe.FindAllStringSubmatch(text, -1) {
		b.WriteString(m[1] + "\n")
	}
	return b.String()
}

// TestMakeTargetsInHelp checks that every make target the documents name is
// listed by make help.
func TestMakeTargetsInHelp(t *testing.T) {
	root := harness.RepoRoot(t)
	out, err := exec.Command("make", "-s", "-C", root, "help").CombinedOutput()
	if err != nil {
		t.Fatalf("make help: %v\n%s", err, out)
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			listed[f[0]] = true
		}
	}
	named := map[string]bool{}
	for _, path := range documents(t, root) {
		text, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		name, _ := filepath.Rel(root, path)
		for _, m := range makeTargetRe.FindAllStringSubmatch(codeText(t, string(text)), -1) {
			for _, target := range strings.Fields(m[1]) {
				named[target] = true
				if !listed[target] {
					t.Errorf("%s names `make %s`, which make help does not list", name, target)
				}
			}
		}
	}
	if len(named) < 5 {
		t.Errorf("found only %d make targets in the documents: %v (the pattern is broken?)", len(named), named)
	}
	t.Logf("make targets named in the documents: %d, all in make help", len(named))
}

// TestScriptsHelp runs every executable script of the repository with --help
// and with an unknown argument: --help prints its usage and exits 0, the
// unknown argument exits non-zero, both within seconds and without changing
// the checkout (no benchmark started, no file written).
func TestScriptsHelp(t *testing.T) {
	root := harness.RepoRoot(t)
	out, err := exec.Command("git", "-C", root, "ls-files", "-s").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	var scripts []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "100755" {
			scripts = append(scripts, f[3])
		}
	}
	if len(scripts) < 4 {
		t.Fatalf("found %d executable scripts: %v", len(scripts), scripts)
	}
	status := func() string {
		b, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=all").Output()
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	before := status()
	for _, s := range scripts {
		for _, tc := range []struct {
			arg string
			ok  bool
		}{{"--help", true}, {"--no-such-argument", false}} {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			cmd := exec.CommandContext(ctx, filepath.Join(root, s), tc.arg)
			cmd.Dir = t.TempDir()
			got, err := cmd.CombinedOutput()
			cancel()
			switch {
			case errors.Is(ctx.Err(), context.DeadlineExceeded):
				t.Errorf("%s %s: still running after 20 s", s, tc.arg)
			case (err == nil) != tc.ok:
				t.Errorf("%s %s: exit %v, want success=%v\n%s", s, tc.arg, err, tc.ok, got)
			case tc.ok && !strings.Contains(strings.ToLower(string(got)), "usage") && len(strings.TrimSpace(string(got))) < 40:
				t.Errorf("%s --help prints no usage: %q", s, got)
			}
		}
	}
	if after := status(); after != before {
		t.Errorf("the scripts changed the checkout:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestReadmeIsAReference keeps README.md a reference (issue 13): at most 400
// lines, and a Contents table linking every ## section.
func TestReadmeIsAReference(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if n := strings.Count(text, "\n"); n > 400 {
		t.Errorf("README.md has %d lines; keep it at most 400 and move the long form to docs/", n)
	}
	fs, err := fences(text)
	if err != nil {
		t.Fatal(err)
	}
	inFence := map[string]bool{}
	for _, f := range fs {
		for _, l := range strings.Split(f.text, "\n") {
			inFence[l] = true
		}
	}
	contents, _, ok := strings.Cut(text[strings.Index(text, "## Contents")+1:], "\n## ")
	if !strings.Contains(text, "## Contents") || !ok {
		t.Fatal("README.md has no ## Contents section")
	}
	sections := 0
	for _, line := range strings.Split(text, "\n") {
		title, ok := strings.CutPrefix(line, "## ")
		if !ok || inFence[line] || title == "Contents" {
			continue
		}
		sections++
		anchor := strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
				return r
			case r >= 'A' && r <= 'Z':
				return r + 'a' - 'A'
			case r == ' ':
				return '-'
			}
			return -1
		}, title)
		if !strings.Contains(contents, "](#"+anchor+")") {
			t.Errorf("README.md section %q is not linked from Contents (#%s)", title, anchor)
		}
	}
	if sections < 8 {
		t.Errorf("README.md has %d sections", sections)
	}
	t.Logf("README.md: %d lines, %d sections, all linked from Contents", strings.Count(text, "\n"), sections)
}
