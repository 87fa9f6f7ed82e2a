package monitoring

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// contractAlerts are the alerts CONTRACTS.md names, exactly, and ModelRolledBack (issue 17).
var contractAlerts = []string{
	"FeatureDrift", "ModelErrorHigh", "InferenceLatencyHigh", "InferenceErrorRateHigh",
	"ModelLoadFailed", "NoModelReady", "PredictionLogDropping", "RetrainJobFailed", "ModelRolledBack",
}

func TestAlertNamesMatchContract(t *testing.T) {
	got := AlertNames()
	want := slices.Clone(contractAlerts)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("alerts.yml defines %v, CONTRACTS.md names %v", got, want)
	}
	for _, name := range contractAlerts {
		anchor := "docs/runbook.md#" + strings.ToLower(name)
		if !bytes.Contains(Alerts, []byte(`runbook_url: "`+anchor+`"`)) {
			t.Errorf("alert %s has no runbook_url %s", name, anchor)
		}
	}
}

func TestRenderAlerts(t *testing.T) {
	tests := []struct {
		name    string
		opts    RenderOptions
		want    []string // substrings of the output
		wantErr bool
	}{
		{name: "unchanged", opts: RenderOptions{}, want: []string{"for: 10m", "for: 5m", "for: 2m"}},
		{name: "all short", opts: RenderOptions{For: 2 * time.Second}, want: []string{"for: 2s"}},
		{name: "one alert", opts: RenderOptions{ForAlert: map[string]time.Duration{"FeatureDrift": 3 * time.Second}},
			want: []string{"for: 3s", "for: 5m"}},
		{name: "zero for one alert", opts: RenderOptions{For: time.Minute, ForAlert: map[string]time.Duration{"FeatureDrift": 0}},
			want: []string{"for: 0s", "for: 1m"}},
		{name: "unknown alert", opts: RenderOptions{ForAlert: map[string]time.Duration{"Nope": time.Second}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := RenderAlerts(Alerts, tt.opts)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			for _, w := range tt.want {
				if !bytes.Contains(out, []byte(w)) {
					t.Errorf("rendered rules lack %q", w)
				}
			}
			if tt.opts.For > 0 && bytes.Contains(out, []byte("for: 10m")) {
				t.Errorf("for: 10m left in place")
			}
			// promtool must accept the rendered rules.
			path := filepath.Join(t.TempDir(), "alerts.yml")
			if err := os.WriteFile(path, out, 0o644); err != nil {
				t.Fatal(err)
			}
			if b, err := exec.Command("promtool", "check", "rules", path).CombinedOutput(); err != nil {
				t.Fatalf("promtool check rules: %v\n%s", err, b)
			}
		})
	}
}

func TestRenderPrometheus(t *testing.T) {
	out, err := RenderPrometheus(Prometheus, PrometheusOptions{Serve: "127.0.0.1:1", Trainer: "127.0.0.1:2",
		Alertmanager: "127.0.0.1:3", ScrapeInterval: time.Second, EvaluationInterval: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"127.0.0.1:1"`, `"127.0.0.1:2"`, `"127.0.0.1:3"`, "scrape_interval: 1s", "evaluation_interval: 2s", "- alerts.yml"} {
		if !bytes.Contains(out, []byte(w)) {
			t.Errorf("rendered config lacks %s:\n%s", w, out)
		}
	}
	for _, w := range []string{"serve:8080", "trainer:8090", "alertmanager:9093"} {
		if bytes.Contains(out, []byte(w)) {
			t.Errorf("rendered config still has %s", w)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "alerts.yml"), Alerts, 0o644)
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), out, 0o644)
	if b, err := exec.Command("promtool", "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, b)
	}
	am, err := RenderAlertmanager(Alertmanager, AlertmanagerOptions{TrainerURL: "http://127.0.0.1:4/v1/alerts",
		GroupWait: time.Second, GroupInterval: 2 * time.Second, RepeatInterval: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"url: http://127.0.0.1:4/v1/alerts", "group_wait: 1s", "group_interval: 2s", "repeat_interval: 3s", "credentials_file: secrets/trainer-token"} {
		if !bytes.Contains(am, []byte(w)) {
			t.Errorf("rendered alertmanager config lacks %s", w)
		}
	}
	for _, w := range []string{"group_wait: 30s", "group_interval: 5m", "group_interval: 10m", "repeat_interval: 4h", "repeat_interval: 12h"} {
		if bytes.Contains(am, []byte(w)) {
			t.Errorf("rendered alertmanager config still has %s", w)
		}
	}
	os.WriteFile(filepath.Join(dir, "alertmanager.yml"), am, 0o644)
	if b, err := exec.Command("amtool", "check-config", filepath.Join(dir, "alertmanager.yml")).CombinedOutput(); err != nil {
		t.Fatalf("amtool check-config: %v\n%s", err, b)
	}
}
