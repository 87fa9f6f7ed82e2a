package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// specMAEGate is the specification's acceptance threshold for a trained
// model: test MAE <= 1.25.
const specMAEGate = "1.25"

type workflow struct {
	Name string                 `json:"name"`
	Env  map[string]string      `json:"env"`
	Jobs map[string]workflowJob `json:"jobs"`
}

type workflowJob struct {
	Needs any               `json:"needs"`
	Uses  string            `json:"uses"`
	Env   map[string]string `json:"env"`
	Steps []struct {
		ID   string            `json:"id"`
		Name string            `json:"name"`
		If   string            `json:"if"`
		Uses string            `json:"uses"`
		Run  string            `json:"run"`
		With map[string]any    `json:"with"`
		Env  map[string]string `json:"env"`
	} `json:"steps"`
}

func loadWorkflow(t *testing.T, name string) workflow {
	t.Helper()
	var w workflow
	if err := yaml.Unmarshal(readFile(t, ".github/workflows/"+name), &w); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return w
}

var pinnedAction = regexp.MustCompile(`^[\w.-]+/[\w./-]+@[0-9a-f]{40}$`)

// Third-party actions are pinned to full commit SHAs (tags can move).
func TestWorkflowsPinActions(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot(t), ".github/workflows/*.y*ml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no workflows: %v", err)
	}
	for _, f := range files {
		w := loadWorkflow(t, filepath.Base(f))
		for jn, j := range w.Jobs {
			if j.Uses != "" && !strings.HasPrefix(j.Uses, "./") && !pinnedAction.MatchString(j.Uses) {
				t.Errorf("%s job %s: reusable workflow %q is not pinned to a commit SHA", filepath.Base(f), jn, j.Uses)
			}
			for _, s := range j.Steps {
				if s.Uses != "" && !strings.HasPrefix(s.Uses, "./") && !pinnedAction.MatchString(s.Uses) {
					t.Errorf("%s job %s: %q is not pinned to a commit SHA", filepath.Base(f), jn, s.Uses)
				}
			}
		}
	}
}

// cd.yml: tests before anything is built, the image before training, and the
// model leaves the run only through the gate.
func TestCDGatesTheModel(t *testing.T) {
	w := loadWorkflow(t, "cd.yml")
	if w.Jobs["test"].Uses != "./.github/workflows/ci.yml" {
		t.Errorf("cd job test uses %q, want the ci workflow", w.Jobs["test"].Uses)
	}
	for job, need := range map[string]string{"image": "test", "train": "image"} {
		if n, _ := w.Jobs[job].Needs.(string); n != need {
			t.Errorf("cd job %s needs %v, want %s", job, w.Jobs[job].Needs, need)
		}
	}
	var pushes bool
	for _, s := range w.Jobs["image"].Steps {
		if strings.HasPrefix(s.Uses, "docker/build-push-action@") && s.With["push"] == true {
			pushes = true
		}
	}
	if !pushes {
		t.Error("cd image job does not push with docker/build-push-action")
	}
	train := w.Jobs["train"]
	if train.Env["MAE_GATE"] != specMAEGate {
		t.Errorf("cd train MAE_GATE=%q, the specification says test MAE <= %s", train.Env["MAE_GATE"], specMAEGate)
	}
	gate, upload, trains := -1, -1, -1
	for i, s := range train.Steps {
		switch {
		case strings.Contains(s.Run, `"$IMAGE_REF" train`):
			trains = i
		case s.ID == "gate":
			gate = i
			for _, want := range []string{".metrics.test.mae", "$MAE_GATE", "exit 1"} {
				if !strings.Contains(s.Run, want) {
					t.Errorf("gate step does not use %s", want)
				}
			}
		case strings.HasPrefix(s.Uses, "actions/upload-artifact@"):
			upload = i
			if strings.Contains(s.If, "always()") || strings.Contains(s.If, "failure()") || !strings.Contains(s.If, "steps.gate.outcome == 'success'") {
				t.Errorf("upload step runs if %q: it must run only when the gate passed", s.If)
			}
		}
	}
	if !(trains >= 0 && trains < gate && gate < upload) {
		t.Errorf("cd train steps: train %d, gate %d, upload %d: want train, then gate, then upload", trains, gate, upload)
	}
}

func TestDependabot(t *testing.T) {
	var cfg struct {
		Version int `json:"version"`
		Updates []struct {
			Ecosystem string `json:"package-ecosystem"`
			Directory string `json:"directory"`
		} `json:"updates"`
	}
	if err := yaml.Unmarshal(readFile(t, ".github/dependabot.yml"), &cfg); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, u := range cfg.Updates {
		got[u.Ecosystem] = true
	}
	for _, eco := range []string{"gomod", "github-actions", "docker"} {
		if !got[eco] {
			t.Errorf("dependabot does not update %s", eco)
		}
	}
	if cfg.Version != 2 {
		t.Errorf("dependabot version %d, want 2", cfg.Version)
	}
	if _, err := os.Stat(filepath.Join(repoRoot(t), "Dockerfile")); err != nil {
		t.Error("dependabot docker updates need the Dockerfile at the root")
	}
}
