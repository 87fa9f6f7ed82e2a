package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/train/external"
	"github.com/flywheel-ml/flywheel/train/jobs"
	"github.com/flywheel-ml/flywheel/train/pipeline/pipelinetest"
	"github.com/flywheel-ml/flywheel/train/serving/servetest"
)

// TestAlertToTrainer runs real Prometheus and Alertmanager against the real
// trainer binary: an always-firing alert labelled action="retrain" is
// delivered with the bearer token from a credentials file, Alertmanager keeps
// re-sending it, and exactly one job runs and publishes version 2.
func TestAlertToTrainer(t *testing.T) {
	start := time.Now()
	dir := t.TempDir()
	models := filepath.Join(dir, "models")
	base := filepath.Join(dir, "base.csv")
	pipelinetest.WriteBase(t, base, 366)
	pipelinetest.Champion(t, &external.Trainer{Command: pipelinetest.ExampleTrainer()}, models, "ridership", base, 366, 4)
	serve := servetest.New(models, "adm")
	defer serve.Close()
	serve.AddFeedback(pipelinetest.Feedback("ridership", 366, 120, 8)...)
	const token = "e2e-trainer-token"
	tokenFile := filepath.Join(dir, "trainer-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	bin := harness.BuildFlywheel(t)
	addr := harness.FreeAddr(t)
	trainer := harness.StartFlywheel(t, bin, "trainer", addr, "/health/ready",
		"--listen", addr, "--token-file", tokenFile, "--db", filepath.Join(dir, "jobs.db"), "--models", models,
		"--work-dir", filepath.Join(dir, "work"), "--data", base, "--target", "y", "--features", "columns", "--serve-url", serve.URL,
		"--tracking-db", filepath.Join(dir, "tracking.db"),
		"--admin-token", "adm", "--external-cmd", strings.Join(pipelinetest.ExampleTrainer(), " "), "--window-days", "60")

	am := harness.StartAlertmanager(t, harness.AlertmanagerOptions{
		Config: fmt.Sprintf(`route:
  receiver: default
  routes:
    - receiver: trainer
      matchers: ['action="retrain"']
      group_by: [action, model]
      group_wait: 1s
      group_interval: 2s
      repeat_interval: 3s
receivers:
  - name: default
  - name: trainer
    webhook_configs:
      - url: %s/v1/alerts
        send_resolved: false
        http_config:
          authorization: {type: Bearer, credentials_file: secrets/trainer-token}
`, trainer.URL),
		Files: map[string]string{"secrets/trainer-token": token + "\n"},
	})
	harness.StartPrometheus(t, harness.PrometheusOptions{
		Config: fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [rules.yml]
alerting:
  alertmanagers: [{static_configs: [{targets: [%q]}]}]
`, am.Addr),
		Files: map[string]string{"rules.yml": `groups:
  - name: e2e
    interval: 1s
    rules:
      - alert: ModelErrorHigh
        expr: vector(1)
        labels: {action: retrain, model: ridership, severity: warning}
      - alert: InferenceLatencyHigh
        expr: vector(1)
        labels: {severity: page}
`},
	})

	list := func() []jobs.Job {
		resp, err := http.Get(trainer.URL + "/v1/jobs")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Jobs []jobs.Job }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out.Jobs
	}
	var j jobs.Job
	deadline := time.Now().Add(90 * time.Second)
	for {
		if js := list(); len(js) > 0 && js[0].Final() {
			j = js[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no finished job after 90s: %+v", list())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if j.State != jobs.StateSucceeded || j.Trigger != jobs.TriggerAlert || j.GroupKey != `{}/{action="retrain"}:{action="retrain", model="ridership"}` {
		t.Fatalf("job = %s %s group %q: %s", j.ID, j.State, j.GroupKey, j.Reason)
	}
	if _, err := os.Stat(filepath.Join(models, "ridership", "2", "model.onnx")); err != nil {
		t.Fatal(err)
	}
	// Alertmanager keeps re-sending the still-firing group (repeat_interval
	// 3s): the deliveries fold into the same job.
	deadline = time.Now().Add(30 * time.Second)
	for {
		js := list()
		if len(js) != 1 {
			t.Fatalf("%d jobs, want exactly 1: %+v", len(js), js)
		}
		if js[0].Deliveries >= 2 {
			j = js[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no re-send folded into the job after 30s: %+v", js[0])
		}
		time.Sleep(250 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(models, "ridership", "3")); err == nil {
		t.Error("a re-sent alert published a second version")
	}
	full, err := http.Get(trainer.URL + "/v1/jobs/" + j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(full.Body).Decode(&j); err != nil {
		t.Fatal(err)
	}
	full.Body.Close()
	resp, err := http.Get(trainer.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	a2s := regexp.MustCompile(`(?m)^flywheel_trainer_alert_to_serving_seconds (\S+)$`).FindSubmatch(metrics)
	if a2s == nil || !strings.Contains(string(metrics), `flywheel_trainer_jobs_total{outcome="succeeded"} 1`) {
		t.Errorf("metrics:\n%s", metrics)
	}
	t.Logf("job %s: %d deliveries, alert fired %s, finished %s; alert_to_serving %ss; test %.1fs",
		j.ID, j.Deliveries, j.FiredAt.Format(time.RFC3339), j.FinishedAt.Format(time.RFC3339), a2s[1], time.Since(start).Seconds())
	for _, st := range j.Steps {
		t.Logf("  %-8s %-9s %6.3fs  %s", st.Name, st.State, st.Seconds, st.Detail)
	}
}
