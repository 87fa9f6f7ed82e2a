package monitoring

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/drift"
)

type webhook struct {
	Version  string `json:"version"`
	Receiver string `json:"receiver"`
	GroupKey string `json:"groupKey"`
	Alerts   []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"alerts"`
}

// TestAlertChain runs the committed rules and routing in a real Prometheus and
// a real Alertmanager on loopback: drift gauges from package drift make
// FeatureDrift fire in Prometheus, Alertmanager delivers it to a stand-in for
// the trainer's webhook with the bearer token read from secrets/trainer-token,
// and a non-retrain alert never reaches the trainer.
func TestAlertChain(t *testing.T) {
	began := time.Now()
	const token = "test-trainer-token"

	// Metrics as serve exposes them: drift of a served version plus readiness.
	reg := prometheus.NewRegistry()
	m, err := drift.New(drift.Options{Config: drift.DefaultConfig(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	quarters := modelrepo.Histogram{Edges: []float64{0, 1, 2, 3, 4}, Proportions: []float64{0.25, 0.25, 0.25, 0.25}}
	m.Add("ridership", 1, []string{"Austin", "temp"}, &modelrepo.Reference{Features: map[string]modelrepo.Histogram{"Austin": quarters, "temp": quarters}})
	ready := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flywheel_model_version_ready", Help: "ready"}, []string{"model", "version"})
	ready.WithLabelValues("ridership", "1").Set(1)
	reg.MustRegister(ready)
	for i := range 200 { // Austin all in the top bin (drifted), temp as in training
		m.Observe("ridership", 1, []float32{3.5, float32(i%4) + 0.5}, []float32{1})
	}
	m.Sync()
	serve := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer serve.Close()

	// The trainer's webhook.
	var (
		mu       sync.Mutex
		received []webhook
		badAuth  []string
	)
	trainer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if got := r.Header.Get("Authorization"); got != "Bearer "+token {
			badAuth = append(badAuth, got)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var p webhook
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("webhook payload: %v: %s", err, body)
		}
		received = append(received, p)
	}))
	defer trainer.Close()

	// Alertmanager with the committed routing.
	amCfg, err := RenderAlertmanager(Alertmanager, AlertmanagerOptions{TrainerURL: trainer.URL + "/v1/alerts", GroupWait: time.Second, GroupInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	am := harness.StartAlertmanager(t, harness.AlertmanagerOptions{Config: string(amCfg),
		Files: map[string]string{"secrets/trainer-token": token + "\n"}})
	amAddr := am.Addr

	// Prometheus with the committed rules, FeatureDrift's `for` shortened.
	rules, err := RenderAlerts(Alerts, RenderOptions{ForAlert: map[string]time.Duration{"FeatureDrift": 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	// The committed prometheus.yml, pointed at loopback. The trainer target
	// is down (no trainer here), which Prometheus only records as up=0.
	promCfg, err := RenderPrometheus(Prometheus, PrometheusOptions{
		Serve: strings.TrimPrefix(serve.URL, "http://"), Trainer: harness.FreeAddr(t), Alertmanager: amAddr,
		ScrapeInterval: time.Second, EvaluationInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	prom := harness.StartPrometheus(t, harness.PrometheusOptions{Config: string(promCfg), Files: map[string]string{"alerts.yml": string(rules)}})
	promAddr := prom.Addr

	client := &http.Client{Timeout: 5 * time.Second}
	// A non-retrain alert straight into Alertmanager: it must not reach the trainer.
	other := `[{"labels":{"alertname":"RetrainJobFailed","severity":"warning","job":"trainer"},"annotations":{"summary":"x"}}]`
	resp, err := client.Post("http://"+amAddr+"/api/v2/alerts", "application/json", strings.NewReader(other))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("posting an alert to Alertmanager: %v %v", err, resp)
	}
	resp.Body.Close()

	var firingAt time.Duration
	harness.WaitUntil(t, "FeatureDrift firing in Prometheus", 60*time.Second, func() bool {
		resp, err := client.Get("http://" + promAddr + "/api/v1/alerts")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Alerts []struct {
					State  string            `json:"state"`
					Labels map[string]string `json:"labels"`
				} `json:"alerts"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil {
			return false
		}
		for _, a := range r.Data.Alerts {
			if a.Labels["alertname"] == "FeatureDrift" && a.State == "firing" {
				firingAt = time.Since(began)
				return true
			}
		}
		return false
	})
	harness.WaitUntil(t, "FeatureDrift at the trainer's webhook", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(received) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	if len(badAuth) > 0 {
		t.Errorf("webhook called with Authorization %q", badAuth)
	}
	p := received[0]
	if p.Version != "4" || p.Receiver != "trainer" || len(p.Alerts) != 1 {
		t.Fatalf("webhook payload: %+v", p)
	}
	a := p.Alerts[0]
	if a.Status != "firing" || a.Labels["alertname"] != "FeatureDrift" || a.Labels["action"] != "retrain" ||
		a.Labels["model"] != "ridership" || a.Labels["version"] != "1" || a.Annotations["runbook_url"] != "docs/runbook.md#featuredrift" {
		t.Fatalf("webhook alert: %+v", a)
	}
	for _, p := range received {
		for _, a := range p.Alerts {
			if a.Labels["action"] != "retrain" {
				t.Errorf("the trainer received %s", a.Labels["alertname"])
			}
		}
	}
	t.Logf("FeatureDrift firing in Prometheus after %v, at the trainer after %v (group key %s)",
		firingAt.Round(100*time.Millisecond), time.Since(began).Round(100*time.Millisecond), p.GroupKey)
}
