package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/monitoring"
	"github.com/flywheel-ml/flywheel/train/dataset"
)

// TestRollbackFiresAlert: a deliberately worse version 2 (the stale model,
// fitted to the raw target) is published over the committed version 1 and
// serves 2015 traffic. The trainer's watch scores version 1 in shadow on the
// same logged requests, finds version 2 significantly worse once the labels
// arrive, restores version 1 by itself within the watch window, and the
// ModelRolledBack alert fires in a real Prometheus scraping the trainer and
// reaches a real Alertmanager.
func TestRollbackFiresAlert(t *testing.T) {
	stale := staleModel(t)
	// version 2: the stale model, published just now
	dir := t.TempDir()
	p := filepath.Join(dir, modelrepo.CardFile)
	if err := os.WriteFile(p, stale[filepath.Join("ridership", "1", "model.json")], 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := modelrepo.LoadCard(p)
	if err != nil {
		t.Fatal(err)
	}
	c.Version, c.CreatedAt = 2, time.Now().UTC().Truncate(time.Second)
	if err := c.Write(p); err != nil {
		t.Fatal(err)
	}
	v2card, _ := os.ReadFile(p)
	serve := startServeWith(t, map[string][]byte{
		filepath.Join("ridership", "2", "model.onnx"): stale[filepath.Join("ridership", "1", "model.onnx")],
		filepath.Join("ridership", "2", "model.json"): v2card,
	}, "--rescan-interval", "1s")
	models := filepath.Join(filepath.Dir(filepath.Dir(serve.DB)), "models")

	bin := flywheelBin(t)
	trainerAddr := harness.FreeAddr(t)
	work := t.TempDir()
	trainer := harness.StartFlywheel(t, bin, "trainer", trainerAddr, "/health/ready",
		"--listen", trainerAddr, "--token", loopToken, "--db", filepath.Join(work, "jobs.db"), "--models", models,
		"--work-dir", filepath.Join(work, "work"), "--data", filepath.Join(harness.RepoRoot(t), "data", "chicago", "chicago.csv"),
		"--serve-url", serve.URL, "--admin-token", adminToken, "--tracking-db", filepath.Join(work, "tracking.db"),
		"--watch-interval", "1s", "--watch-min-rows", "28", "--log-format", "json")

	am, err := monitoring.RenderAlertmanager(monitoring.Alertmanager, monitoring.AlertmanagerOptions{
		TrainerURL: trainer.URL + "/v1/alerts", GroupWait: time.Second, GroupInterval: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	amProc := harness.StartAlertmanager(t, harness.AlertmanagerOptions{Config: string(am),
		Files: map[string]string{"secrets/trainer-token": loopToken + "\n"}})
	rules, err := monitoring.RenderAlerts(monitoring.Alerts, monitoring.RenderOptions{For: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	promCfg, err := monitoring.RenderPrometheus(monitoring.Prometheus, monitoring.PrometheusOptions{Serve: serve.Addr, Trainer: trainerAddr,
		Alertmanager: amProc.Addr, ScrapeInterval: time.Second, EvaluationInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	prom := harness.StartPrometheus(t, harness.PrometheusOptions{Config: string(promCfg), Files: map[string]string{"alerts.yml": string(rules)}})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// the counter must be scraped at zero before it moves, or increase() misses it
	waitFor(t, ctx, "a scrape of the trainer's rollback counter", func() bool {
		s, err := harness.Query(ctx, prom.URL, `flywheel_trainer_rollbacks_total{model="ridership"}`)
		return err == nil && len(s) == 1
	})
	began := time.Now()

	// 2015 traffic answered by version 2, then the labels
	rows := between(chicago(t), "2015-06-01", "2015-07-26")
	labels := make([]map[string]any, 0, len(rows))
	for _, r := range rows {
		id := "rollback-" + r.Date.Format(time.DateOnly)
		infer(t, serve.URL, id, map[string]any{"date": r.Date.Format(time.DateOnly)}, []dataset.Row{r})
		labels = append(labels, map[string]any{"id": id, "value": r.Target})
	}
	body, _ := json.Marshal(labels)
	if code, resp, err := post(serve.URL+"/v1/feedback", body, ""); err != nil || code != http.StatusOK {
		t.Fatalf("feedback: %d %v %s", code, err, resp)
	}

	// the watch restores version 1 by itself
	waitFor(t, ctx, "version 2 rolled back", func() bool {
		_, err := os.Stat(filepath.Join(models, "ridership", "2"))
		return os.IsNotExist(err)
	})
	rolledBack := time.Since(began)
	waitFor(t, ctx, "serve answering with version 1 again", func() bool {
		code, resp, err := post(serve.URL+"/v2/models/ridership/infer", inferBody("after", nil, rows[:1]), "")
		var out struct {
			Version string `json:"model_version"`
		}
		_ = json.Unmarshal(resp, &out)
		return err == nil && code == http.StatusOK && out.Version == "1"
	})
	waitFor(t, ctx, "ModelRolledBack firing in Prometheus", func() bool {
		as, err := harness.Alerts(ctx, prom.URL)
		if err != nil {
			return false
		}
		for _, a := range as {
			if a.Labels["alertname"] == "ModelRolledBack" && a.State == "firing" && a.Labels["model"] == "ridership" {
				return true
			}
		}
		return false
	})
	firing := time.Since(began)
	waitFor(t, ctx, "ModelRolledBack in Alertmanager", func() bool {
		var got []struct {
			Labels map[string]string `json:"labels"`
		}
		resp, err := http.Get(amProc.URL + "/api/v2/alerts")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&got) != nil {
			return false
		}
		for _, a := range got {
			if a.Labels["alertname"] == "ModelRolledBack" {
				return true
			}
		}
		return false
	})
	hidden, _ := filepath.Glob(filepath.Join(models, "ridership", ".rolledback-2-*"))
	if len(hidden) != 1 {
		t.Fatalf("rolled-back directories %v", hidden)
	}
	t.Log(fmt.Sprintf("56 labelled requests sent; rolled back %.1fs later, ModelRolledBack firing after %.1fs, in Alertmanager after %.1fs",
		rolledBack.Seconds(), firing.Seconds(), time.Since(began).Seconds()))
}
