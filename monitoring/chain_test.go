package monitoring

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/drift"
)

// freePort returns a free loopback address.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startProcess runs a real binary until the test ends (SIGTERM, then kill)
// and dumps its output when the test fails.
func startProcess(t *testing.T, name string, args ...string) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
}

// waitFor polls fn every 200ms until it returns true or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, fn func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !fn() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

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
	dir := t.TempDir()
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
	amDir := filepath.Join(dir, "alertmanager")
	os.MkdirAll(filepath.Join(amDir, "secrets"), 0o700)
	os.WriteFile(filepath.Join(amDir, "secrets", "trainer-token"), []byte(token+"\n"), 0o600)
	amCfg, err := RenderAlertmanager(Alertmanager, AlertmanagerOptions{TrainerURL: trainer.URL + "/v1/alerts", GroupWait: time.Second, GroupInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(amDir, "alertmanager.yml"), amCfg, 0o644)
	amAddr := freePort(t)
	startProcess(t, "prometheus-alertmanager", "--config.file="+filepath.Join(amDir, "alertmanager.yml"),
		"--storage.path="+filepath.Join(amDir, "data"), "--web.listen-address="+amAddr, "--cluster.listen-address=")

	// Prometheus with the committed rules, FeatureDrift's `for` shortened.
	promDir := filepath.Join(dir, "prometheus")
	os.MkdirAll(promDir, 0o755)
	rules, err := RenderAlerts(Alerts, RenderOptions{ForAlert: map[string]time.Duration{"FeatureDrift": 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(promDir, "alerts.yml"), rules, 0o644)
	// The committed prometheus.yml, pointed at loopback. The trainer target
	// is down (no trainer here), which Prometheus only records as up=0.
	promCfg, err := RenderPrometheus(Prometheus, PrometheusOptions{
		Serve: strings.TrimPrefix(serve.URL, "http://"), Trainer: freePort(t), Alertmanager: amAddr,
		ScrapeInterval: time.Second, EvaluationInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(promDir, "prometheus.yml"), promCfg, 0o644)
	promAddr := freePort(t)
	startProcess(t, "prometheus", "--config.file="+filepath.Join(promDir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(promDir, "data"), "--web.listen-address="+promAddr)

	client := &http.Client{Timeout: 5 * time.Second}
	waitFor(t, 30*time.Second, "Alertmanager ready", func() bool {
		resp, err := client.Get("http://" + amAddr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	// A non-retrain alert straight into Alertmanager: it must not reach the trainer.
	other := `[{"labels":{"alertname":"RetrainJobFailed","severity":"warning","job":"trainer"},"annotations":{"summary":"x"}}]`
	resp, err := client.Post("http://"+amAddr+"/api/v2/alerts", "application/json", strings.NewReader(other))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("posting an alert to Alertmanager: %v %v", err, resp)
	}
	resp.Body.Close()

	var firingAt time.Duration
	waitFor(t, 60*time.Second, "FeatureDrift firing in Prometheus", func() bool {
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
	waitFor(t, 30*time.Second, "FeatureDrift at the trainer's webhook", func() bool {
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
