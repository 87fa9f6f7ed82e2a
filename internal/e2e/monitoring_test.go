package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/monitoring"
	"github.com/flywheel-ml/flywheel/server/testmodel"
	"github.com/flywheel-ml/flywheel/train/dataset"
	"github.com/flywheel-ml/flywheel/train/features"
)

// TestDriftAlertFiresInPrometheus runs the committed prometheus.yml and
// alerts.yml (rendered to loopback, 1s intervals, FeatureDrift and
// ModelErrorHigh with for: 2s) in a real Prometheus scraping a real
// `flywheel serve` with a stale ridership model (staleModel). After a first scrape
// it replays 2015-01-01 … 2016-08-28 as the replay tool does (one request per
// day, id replay-<date>, the date as a parameter) and posts the true
// ridership as feedback: FeatureDrift must fire within the bounded time with
// the lagged ridership features above PSI 0.2, the live MAE must exceed the
// card's threshold (ModelErrorHigh), and a replayed prediction must be
// traceable with its label and lineage.
func TestDriftAlertFiresInPrometheus(t *testing.T) {
	stale := staleModel(t) // the build and the training are not part of the measured time
	began := time.Now()
	serve := startServeWith(t, stale)
	rules, err := monitoring.RenderAlerts(monitoring.Alerts, monitoring.RenderOptions{
		ForAlert: map[string]time.Duration{"FeatureDrift": 2 * time.Second, "ModelErrorHigh": 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := monitoring.RenderPrometheus(monitoring.Prometheus, monitoring.PrometheusOptions{Serve: serve.Addr,
		Trainer: harness.FreeAddr(t), Alertmanager: harness.FreeAddr(t), ScrapeInterval: time.Second, EvaluationInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	prom := harness.StartPrometheus(t, harness.PrometheusOptions{Config: string(cfg), Files: map[string]string{"alerts.yml": string(rules)}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A counter whose first scraped sample already holds the traffic shows
	// no increase(): wait for a scrape of the quality counters at zero.
	waitFor(t, ctx, "a first scrape of serve", func() bool {
		s, err := harness.Query(ctx, prom.URL, `flywheel_feedback_labels_total{model="ridership",version="1"}`)
		return err == nil && len(s) == 1
	})
	scraped := time.Since(began)

	d := chicago(t)
	recent := between(d, "2015-01-01", "2016-08-28")
	labels := make([]map[string]any, 0, len(recent))
	for _, r := range recent {
		date := r.Date.Format(time.DateOnly)
		infer(t, serve.URL, "replay-"+date, map[string]any{"date": date}, []dataset.Row{r})
		labels = append(labels, map[string]any{"id": "replay-" + date, "value": r.Target})
	}
	body, _ := json.Marshal(labels)
	code, resp, err := post(serve.URL+"/v1/feedback", body, "")
	if err != nil || code != http.StatusOK {
		t.Fatalf("feedback: %d %v %s", code, err, resp)
	}
	var fr struct{ Created, Failed int }
	json.Unmarshal(resp, &fr)
	if fr.Created != len(recent) || fr.Failed != 0 {
		t.Fatalf("feedback: %s", resp)
	}
	sent := time.Since(began)

	firing := map[string]harness.PromAlert{}
	waitFor(t, ctx, "FeatureDrift and ModelErrorHigh firing", func() bool {
		alerts, err := harness.Alerts(ctx, prom.URL)
		if err != nil {
			return false
		}
		for _, a := range alerts {
			if a.State == "firing" && a.Labels["model"] == "ridership" {
				if _, seen := firing[a.Labels["alertname"]]; !seen {
					t.Logf("%s firing %v after the start (value %s)", a.Labels["alertname"], time.Since(began).Round(100*time.Millisecond), a.Value)
				}
				firing[a.Labels["alertname"]] = a
			}
		}
		return firing["FeatureDrift"].State != "" && firing["ModelErrorHigh"].State != ""
	})
	for name, a := range firing {
		if a.Labels["action"] != "retrain" || a.Labels["version"] != "1" {
			t.Errorf("%s labels %v", name, a.Labels)
		}
	}

	mfs := scrape(t, serve.URL)
	psi := values(mfs, "flywheel_feature_drift_psi", "feature")
	for _, name := range stationLags {
		if psi[name] <= 0.2 {
			t.Errorf("2015–2016 replay: PSI(%s) = %.3f, want > 0.2", name, psi[name])
		}
	}
	pred := values(mfs, "flywheel_prediction_drift_psi", "model")["ridership"]
	t.Logf("2015–2016 replay (%d rows): lagged ridership PSI %s; prediction PSI %.2f", len(recent), psiSummary(psi, stationLags), pred)
	if w := values(mfs, "flywheel_drift_window_rows", "model")["ridership"]; int(w) != len(recent) {
		t.Errorf("drift window holds %g rows, want %d", w, len(recent))
	}

	// Traceability: the logged prediction with its label and lineage.
	code, resp, err = get(serve.URL+"/v1/predictions/replay-2016-08-01", adminToken)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /v1/predictions/replay-2016-08-01: %d %v %s", code, err, resp)
	}
	var staleCard struct {
		Training struct{ Dataset struct{ Digest string } }
	}
	if err := json.Unmarshal(stale[filepath.Join("ridership", "1", "model.json")], &staleCard); err != nil || staleCard.Training.Dataset.Digest == "" {
		t.Fatalf("stale card: %v", err)
	}
	for _, want := range []string{`"version":1`, `"date":"2016-08-01"`, `"label":`, staleCard.Training.Dataset.Digest, `"git_commit"`} {
		if !bytes.Contains(resp, []byte(want)) {
			t.Errorf("prediction lookup lacks %s: %s", want, resp)
		}
	}
	// Export (admin token): one labelled row per replayed day since the date.
	if code, _, _ := get(serve.URL+"/v1/feedback/export?model=ridership", ""); code != http.StatusUnauthorized {
		t.Errorf("export without the token: %d, want 401", code)
	}
	code, resp, err = get(serve.URL+"/v1/feedback/export?model=ridership", adminToken)
	if err != nil || code != http.StatusOK {
		t.Fatalf("export: %d %v", code, err)
	}
	rows := 0
	sc := bufio.NewScanner(bytes.NewReader(resp))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var row struct {
			ID         string             `json:"id"`
			Features   map[string]float64 `json:"features"`
			Label      *float64           `json:"label"`
			Prediction *float64           `json:"prediction"`
			Parameters map[string]any     `json:"parameters"`
		}
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil || row.Label == nil || row.Prediction == nil ||
			len(row.Features) != features.Count || row.Parameters["date"] == nil {
			t.Fatalf("export row %q: %v", sc.Text(), err)
		}
		rows++
	}
	if rows != len(recent) {
		t.Errorf("export: %d rows, want %d", rows, len(recent))
	}
	t.Logf("first scrape after %v, %d rows + labels sent after %v, both alerts firing after %v",
		scraped.Round(100*time.Millisecond), len(recent), sent.Round(100*time.Millisecond), time.Since(began).Round(100*time.Millisecond))
}

// waitFor polls cond every 200ms until it holds or ctx ends (a failure).
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestDriftOfRidershipCard serves the committed ridership model and checks
// PSI against its card's reference: 1,000 rows drawn from its training
// period (2001–2011) keep every feature and the prediction below 0.1;
// 2015–2016 drives every lagged ridership feature above 0.2.
func TestDriftOfRidershipCard(t *testing.T) {
	d := chicago(t)
	train := between(d, "2001-01-22", "2011-12-31")
	rng := rand.New(rand.NewPCG(1, 2))
	like := make([]dataset.Row, 1000)
	for i := range like {
		like[i] = train[rng.IntN(len(train))]
	}
	recent := between(d, "2015-01-01", "2016-08-28")
	cases := []struct {
		name  string
		rows  []dataset.Row
		check func(t *testing.T, psi map[string]float64, pred float64)
	}{
		{"2001–2011 sample", like, func(t *testing.T, psi map[string]float64, pred float64) {
			worst, at := 0.0, ""
			for name, v := range psi {
				if v >= 0.1 {
					t.Errorf("PSI(%s) = %.4f, want < 0.1", name, v)
				}
				if v > worst {
					worst, at = v, name
				}
			}
			if pred >= 0.1 {
				t.Errorf("prediction PSI = %.4f, want < 0.1", pred)
			}
			t.Logf("max feature PSI %.4f (%s), prediction PSI %.4f", worst, at, pred)
		}},
		{"2015–2016", recent, func(t *testing.T, psi map[string]float64, pred float64) {
			for _, name := range stationLags {
				if psi[name] <= 0.2 {
					t.Errorf("PSI(%s) = %.4f, want > 0.2", name, psi[name])
				}
			}
			t.Logf("lagged ridership PSI %s; prediction PSI %.2f", psiSummary(psi, stationLags), pred)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			serve := startServe(t, "--predlog-db", "")
			for i := 0; i < len(c.rows); i += 100 {
				infer(t, serve.URL, "", nil, c.rows[i:min(i+100, len(c.rows))])
			}
			var mfs = scrape(t, serve.URL)
			deadline := time.Now().Add(10 * time.Second)
			for int(values(mfs, "flywheel_drift_window_rows", "model")["ridership"]) != len(c.rows) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond) // the monitor applies observations every 20ms
				mfs = scrape(t, serve.URL)
			}
			psi := values(mfs, "flywheel_feature_drift_psi", "feature")
			if len(psi) != features.Count {
				t.Fatalf("%d feature PSI series, want %d", len(psi), features.Count)
			}
			c.check(t, psi, values(mfs, "flywheel_prediction_drift_psi", "model")["ridership"])
		})
	}
}

// TestLoadPredictionsWithFeedbackThroughServe sends 20,000 predictions from
// 16 concurrent clients to a real `flywheel serve` at default settings, each
// client labelling its predictions in batches of 50 right after making
// them: every label must be in the database joined to its prediction and
// the drop counter must read zero.
func TestLoadPredictionsWithFeedbackThroughServe(t *testing.T) {
	const (
		clients = 16
		total   = 20000
		batch   = 50
	)
	// Every client is 127.0.0.1, one bucket of the per-client label rate:
	// a trusted label feed at full speed runs with the limit off.
	serve := startServe(t, "--feedback-rate", "-1")
	rows := chicago(t).Rows
	bodies := make([][]byte, len(rows)) // pre-encoded, id patched per request
	for i, r := range rows {
		bodies[i] = inferBody("", nil, []dataset.Row{r})
	}
	start := time.Now()
	errs := make(chan error, clients)
	for c := range clients {
		go func() {
			var labels []map[string]any
			flush := func() error {
				b, _ := json.Marshal(labels)
				labels = labels[:0]
				code, resp, err := post(serve.URL+"/v1/feedback", b, "")
				var fr struct{ Created, Failed int }
				json.Unmarshal(resp, &fr)
				if err != nil || code != http.StatusOK || fr.Failed != 0 {
					return fmt.Errorf("feedback: %d %v %s", code, err, resp)
				}
				return nil
			}
			for i := c; i < total; i += clients {
				id := fmt.Sprintf("load-%d", i)
				r := i % len(rows)
				body := append([]byte(`{"id":"`+id+`",`), bodies[r][1:]...)
				code, resp, err := post(serve.URL+"/v2/models/ridership/infer", body, "")
				if err != nil || code != http.StatusOK {
					errs <- fmt.Errorf("infer %s: %d %v %s", id, code, err, resp)
					return
				}
				labels = append(labels, map[string]any{"id": id, "value": rows[r].Target})
				if len(labels) == batch {
					if err := flush(); err != nil {
						errs <- err
						return
					}
				}
			}
			if len(labels) > 0 {
				if err := flush(); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	mfs := scrape(t, serve.URL)
	if got := values(mfs, "flywheel_predlog_dropped_total", "")[""]; got != 0 {
		t.Errorf("flywheel_predlog_dropped_total = %g, want 0", got)
	}
	if got := values(mfs, "flywheel_feedback_labels_total", "model")["ridership"]; got != total {
		t.Errorf("flywheel_feedback_labels_total = %g, want %d", got, total)
	}
	httpClient.CloseIdleConnections()
	if err := serve.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	var labels, joined, predictions int
	db := harness.OpenDB(t, serve.DB) // serve has stopped
	db.QueryRow(`SELECT COUNT(*), COUNT(prediction) FROM labels WHERE id LIKE 'load-%'`).Scan(&labels, &joined)
	db.QueryRow(`SELECT COUNT(*) FROM predictions WHERE id LIKE 'load-%'`).Scan(&predictions)
	if labels != total || joined != total || predictions != total {
		t.Fatalf("database: %d labels (%d joined to a prediction), %d predictions; want %d each", labels, joined, predictions, total)
	}
	t.Logf("%d predictions + labels from %d clients through serve in %v (%.0f predictions/s)", total, clients,
		elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds())
}

// grafanaVars replaces Grafana's template variables by values PromQL parses.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h", "$model", "ridership")

type dashboardPanel struct {
	Title   string           `json:"title"`
	Panels  []dashboardPanel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// eachDashboardQuery calls fn with the panel title and the expression
// (Grafana's variables replaced as in grafanaVars) of every target of every
// panel, nested ones included, of every committed Grafana dashboard.
func eachDashboardQuery(t *testing.T, fn func(title, raw, expr string)) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(harness.RepoRoot(t), "monitoring", "grafana", "dashboards", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				fn(p.Title, tg.Expr, grafanaVars.Replace(tg.Expr))
			}
			walk(p.Panels)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct{ Panels []dashboardPanel }
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		walk(d.Panels)
	}
}

// dashboardMetrics returns metric name → panel titles over every committed
// Grafana dashboard, parsing each expression with Prometheus's parser.
func dashboardMetrics(t *testing.T) map[string][]string {
	t.Helper()
	used := map[string][]string{}
	eachDashboardQuery(t, func(title, raw, q string) {
		expr, err := parser.ParseExpr(q)
		if err != nil {
			t.Errorf("panel %q: %q does not parse: %v", title, raw, err)
			return
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				used[vs.Name] = append(used[vs.Name], title)
			}
			return nil
		})
	})
	return used
}

// exposedNames returns every series name of a scrape (histograms and
// summaries as their _bucket, _sum and _count series too).
func exposedNames(mfs map[string]*dto.MetricFamily) map[string]bool {
	out := map[string]bool{}
	for name, mf := range mfs {
		if len(mf.GetMetric()) == 0 {
			continue
		}
		out[name] = true
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM:
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			out[name+"_sum"], out[name+"_count"] = true, true
		}
	}
	return out
}

// TestDashboardMetricsScraped: every metric the Grafana dashboard charts is
// in a live scrape of `flywheel serve` (after traffic and feedback) or of
// `flywheel trainer`; `up` is Prometheus's own. Beside the ridership
// regression model, serve has a small classifier: accuracy counters exist for
// classification models only.
func TestDashboardMetricsScraped(t *testing.T) {
	serve := startServeWith(t, map[string][]byte{
		"classifier/1/model.onnx": testmodel.MLP("classifier", []int{4, 8, 3}, 1),
		"classifier/1/model.json": []byte(`{"name":"classifier","version":1,"task":"classification",
			"inputs":[{"name":"input","datatype":"FP32","shape":[-1,4],"features":["a","b","c","d"]}],
			"outputs":[{"name":"probabilities","datatype":"FP32","shape":[-1,3]}]}`),
	})
	d := chicago(t)
	rows := between(d, "2015-01-01", "2015-06-30")
	labels := make([]map[string]any, 0, len(rows))
	for i, r := range rows {
		id := fmt.Sprintf("dash-%d", i)
		infer(t, serve.URL, id, nil, []dataset.Row{r})
		labels = append(labels, map[string]any{"id": id, "value": r.Target})
	}
	if _, _, err := post(serve.URL+"/v2/models/ridership/infer", []byte(`{"inputs":[]}`), ""); err != nil {
		t.Fatal(err) // a failed inference: the failure outcome is exposed too
	}
	body, _ := json.Marshal(labels)
	if code, resp, err := post(serve.URL+"/v1/feedback", body, ""); err != nil || code != http.StatusOK {
		t.Fatalf("feedback: %d %v %s", code, err, resp)
	}

	dir := t.TempDir()
	addr := harness.FreeAddr(t)
	trainer := harness.StartFlywheel(t, flywheelBin(t), "trainer", addr, "/health/live",
		"--listen", addr, "--token", "e2e-trainer", "--db", filepath.Join(dir, "jobs.db"), "--models", filepath.Join(dir, "models"),
		"--work-dir", filepath.Join(dir, "work"), "--data", filepath.Join(harness.RepoRoot(t), "data", "chicago", "chicago.csv"),
		"--target", "ridership", "--serve-url", serve.URL, "--admin-token", adminToken, "--external-cmd", "true")

	exposed := map[string]string{"up": "prometheus"}
	for where, url := range map[string]string{"serve": serve.URL, "trainer": trainer.URL} {
		for name := range exposedNames(scrape(t, url)) {
			exposed[name] = where
		}
	}
	used := dashboardMetrics(t)
	names := make([]string, 0, len(used))
	for name, panels := range used {
		names = append(names, name)
		if exposed[name] == "" {
			t.Errorf("dashboard panels %q chart %s, which neither serve nor the trainer exposes", panels, name)
		}
	}
	sort.Strings(names)
	t.Logf("%d dashboard metrics checked: %s", len(names), strings.Join(names, " "))
}
