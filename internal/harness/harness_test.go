package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/train/alert"
)

// TestPrometheusToAlertmanagerWebhook starts the real Prometheus and
// Alertmanager once with trivial configs: an always-firing rule labelled
// action="retrain" reaches a webhook with the bearer token, and the payload
// decodes with train/alert.
// firedAt is the earliest startsAt of the retrain alerts of m.
func firedAt(m *alert.Message) time.Time { return alert.FiredAt(m.Retrain()) }

func TestPrometheusToAlertmanagerWebhook(t *testing.T) {
	var mu sync.Mutex
	var got []*alert.Message
	var auths []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		m, err := alert.Decode(bytes.NewReader(b))
		if err != nil {
			t.Errorf("webhook payload from Alertmanager does not decode: %v\n%s", err, b)
			w.WriteHeader(400)
			return
		}
		mu.Lock()
		got = append(got, m)
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
	}))
	defer hook.Close()

	am := StartAlertmanager(t, AlertmanagerOptions{
		Config: fmt.Sprintf(`route:
  receiver: trainer
  group_by: [action, model]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: trainer
    webhook_configs:
      - url: %s/v1/alerts
        send_resolved: false
        http_config:
          authorization:
            type: Bearer
            credentials_file: secrets/token
`, hook.URL),
		Files: map[string]string{"secrets/token": "harness-token\n"},
	})
	prom := StartPrometheus(t, PrometheusOptions{
		Config: fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [rules.yml]
alerting:
  alertmanagers:
    - static_configs:
        - targets: [%q]
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: [%q]
`, am.Addr, "127.0.0.1:1"),
		Files: map[string]string{"rules.yml": `groups:
  - name: harness
    interval: 1s
    rules:
      - alert: HarnessRetrain
        expr: vector(1)
        labels: {action: retrain, model: ridership}
        annotations: {summary: always firing}
`},
	})
	start := time.Now()
	deadline := time.After(60 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("no webhook after 60s\n--- prometheus ---\n%s\n--- alertmanager ---\n%s", tail(prom.Logs(), 3000), tail(am.Logs(), 3000))
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Logf("first webhook %.1fs after start", time.Since(start).Seconds())
	mu.Lock()
	m, auth := got[0], auths[0]
	mu.Unlock()
	if auth != "Bearer harness-token" {
		t.Errorf("Authorization = %q", auth)
	}
	r := m.Retrain()
	if len(r) != 1 || r[0].Labels["alertname"] != "HarnessRetrain" || r[0].Labels["model"] != "ridership" || !strings.Contains(m.GroupKey, `action="retrain"`) {
		t.Errorf("message = %+v", m)
	}
	t.Logf("groupKey %s", m.GroupKey)
	ctx := context.Background()
	alerts, err := Alerts(ctx, prom.URL)
	if err != nil || len(alerts) != 1 || alerts[0].State != "firing" || alerts[0].ActiveAt.IsZero() || alerts[0].Labels["alertname"] != "HarnessRetrain" {
		t.Errorf("alerts = %+v, %v", alerts, err)
	}
	if got := firedAt(m); !got.IsZero() && got.Sub(alerts[0].ActiveAt).Abs() > 2*time.Second {
		t.Errorf("webhook startsAt %s vs Prometheus activeAt %s", got, alerts[0].ActiveAt)
	}
	samples, err := Query(ctx, prom.URL, `ALERTS{alertstate="firing"}`)
	if err != nil || len(samples) != 1 || samples[0].Value != 1 || samples[0].Labels["model"] != "ridership" {
		t.Errorf("query = %+v, %v", samples, err)
	}
	if _, err := Query(ctx, prom.URL, `sum(`); err == nil {
		t.Error("a bad query must fail")
	}
	for _, p := range []*Process{prom, am} {
		if err := p.Stop(15 * time.Second); err != nil {
			t.Errorf("%s: %v", p.Name, err)
		}
	}
}
