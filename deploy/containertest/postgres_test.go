//go:build containers

package containertest

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/train/jobs"
)

// scaledStack is docker-compose.postgres.yml over the one-machine stack,
// with the local overrides of each.
var scaledStack = stackConfig{
	project: "flywheel-test-pg",
	files:   []string{"docker-compose.yml", "deploy/compose/local.yml", "docker-compose.postgres.yml", "deploy/compose/local-postgres.yml"},
	services: []string{"postgres", "serve", "serve-a", "serve-b", "trainer", "trainer-a", "trainer-b",
		"mlflow", "prometheus", "alertmanager"},
}

// TestComposePostgres is a user's `docker compose -f docker-compose.yml -f
// docker-compose.postgres.yml up` on this machine: PostgreSQL, two serve
// replicas behind HAProxy, two trainers behind HAProxy, Prometheus scraping
// every replica; predictions through the load balancer, labels posted to
// the replica that did not serve the prediction stored once in PostgreSQL,
// a retrain alert through Alertmanager run by one trainer and its version
// served by both replicas, a replica stopped without a failed request, and
// nothing left after `compose down -v`.
func TestComposePostgres(t *testing.T) {
	began := time.Now()
	s := newStackWith(t, scaledStack)
	rep := &report{}
	checkComposeConfig(t, s)
	s.down()
	s.finish(rep, began, "containers (postgres)")
	buildImage(s, rep)
	// A stale v1 (trained up to 2008) in the models volume, as the
	// one-machine test does, so that the retrain below publishes v2.
	start := time.Now()
	s.compose(10*time.Minute, "run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", "cli", "-c", staleV1)
	rep.add("stale v1 in the models volume: %.0fs", time.Since(start).Seconds())

	start = time.Now()
	s.compose(10*time.Minute, "up", "-d", "--wait", "--wait-timeout", "300")
	rep.add("compose up --wait (%d services healthy): %.0fs", len(s.cfg.services), time.Since(start).Seconds())
	checkHealthy(t, s)
	checkLoopback(t, s)

	ctx := context.Background()
	// Prometheus scrapes each replica, not the load balancers.
	for job, n := range map[string]int{"serve": 2, "trainer": 2} {
		waitUntil(t, "Prometheus to scrape both "+job+" replicas", 60*time.Second, func() bool {
			v, err := harness.Query(ctx, s.url("prometheus"), fmt.Sprintf(`count(up{job=%q} == 1)`, job))
			return err == nil && len(v) == 1 && int(v[0].Value) == n
		})
	}
	// The trainer load balancer answers for the trainers, with their token.
	if code, b, err := httpGet(ctx, s.url("trainer")+"/v1/jobs", s.tokens["trainer"], nil); code != http.StatusOK || err != nil {
		t.Errorf("GET /v1/jobs through the trainer load balancer: %d %v %s", code, err, b)
	}

	db, err := sql.Open("pgx", s.databaseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	// January to April 2016 through the serve load balancer, from the cli
	// container. (Four months of labels each side: the retrain's 120-day
	// holdout, local-postgres.yml, makes its gate decide beyond noise; 56
	// days of winter once left the candidate's gain within it.)
	lb := replay(t, s, s.url("serve"), "2016-01-01", "2016-04-30")
	rep.add("replay 2016-01..04 through the serve load balancer: %d requests, %d failed, %d labels, %d failed", lb.Sent, lb.Failed, lb.Labels, lb.LabelsFailed)
	// May to August 2016: every prediction to serve-a, every label to
	// serve-b (a proxy of the test's splits them).
	split := splitProxy(t, s.url("serve-a"), s.url("serve-b"))
	cross := replay(t, s, split, "2016-05-01", "2016-08-28")
	rep.add("replay 2016-05..08, predictions to serve-a, labels to serve-b: %d requests, %d failed, %d labels, %d failed", cross.Sent, cross.Failed, cross.Labels, cross.LabelsFailed)
	for _, st := range []replayStats{lb, cross} {
		if st.Sent == 0 || st.Failed != 0 || st.LabelsFailed != 0 || st.Labels != st.Sent {
			t.Errorf("replay: %d requests, %d failed, %d labels, %d failed: %v", st.Sent, st.Failed, st.Labels, st.LabelsFailed, st.FirstFailures)
		}
	}
	// Each acknowledged label is one row that found its prediction, whichever
	// replica served it.
	var labels, distinct, joined, maxRev int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), COUNT(DISTINCT id), COUNT(version), COALESCE(MAX(revisions), 0) FROM labels`).
		Scan(&labels, &distinct, &joined, &maxRev); err != nil {
		t.Fatalf("labels in PostgreSQL: %v", err)
	}
	want := lb.Labels + cross.Labels
	rep.add("PostgreSQL: %d labels, %d distinct, %d joined to their prediction, max revisions %d (acknowledged %d)", labels, distinct, joined, maxRev, want)
	if labels != want || distinct != want || joined != want || maxRev != 1 {
		t.Errorf("PostgreSQL holds %d labels (%d distinct, %d with their prediction, max revisions %d); %d were acknowledged", labels, distinct, joined, maxRev, want)
	}
	// The replicas' own counters: serve-a answered February, serve-b stored its labels.
	a, b := addr(s, "serve-a"), addr(s, "serve-b")
	inferred := scrapeSum(t, s.url("serve-a"), "flywheel_inference_requests_total", `outcome="success"`) +
		scrapeSum(t, s.url("serve-b"), "flywheel_inference_requests_total", `outcome="success"`)
	labelledB := scrapeSum(t, s.url("serve-b"), "flywheel_feedback_labels_total", "")
	labelledA := scrapeSum(t, s.url("serve-a"), "flywheel_feedback_labels_total", "")
	rep.add("replica counters: predictions a+b %.0f, labels stored by serve-a %.0f, by serve-b %.0f", inferred, labelledA, labelledB)
	if int(inferred) != lb.Sent+cross.Sent || int(labelledA+labelledB) != want || labelledB < float64(cross.Labels) {
		t.Errorf("replicas counted %.0f predictions (want %d) and %.0f + %.0f labels (want %d, serve-b at least %d); %s %s", inferred, lb.Sent+cross.Sent,
			labelledA, labelledB, want, cross.Labels, a, b)
	}

	// Alertmanager → the trainer load balancer → a trainer: one retrain
	// alert is one job in the shared queue, claimed by one of the trainers.
	start = time.Now()
	postAlert(t, s)
	var jobsN int
	var owner string
	waitUntil(t, "the alert's job in PostgreSQL, claimed by a trainer", 90*time.Second, func() bool {
		err := db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(MAX(owner), '') FROM jobs WHERE trigger = 'alert'`).Scan(&jobsN, &owner)
		return err == nil && jobsN > 0 && owner != ""
	})
	rep.add("retrain alert posted to Alertmanager: %d job in PostgreSQL, claimed by %s %.1fs later", jobsN, owner, time.Since(start).Seconds())
	if jobsN != 1 || (owner != "trainer-a" && owner != "trainer-b") {
		t.Errorf("after one retrain alert: %d alert jobs, owner %q; want one, claimed by trainer-a or trainer-b", jobsN, owner)
	}
	// The job (snapshot from PostgreSQL, work in the container) publishes
	// v2 into the shared models volume; both replicas serve it.
	var job jobs.Job
	waitUntil(t, "the alert's job to finish", 4*time.Minute, func() bool {
		var js struct{ Jobs []jobs.Job }
		if code, _, _ := httpGet(ctx, s.url("trainer")+"/v1/jobs", s.tokens["trainer"], &js); code != http.StatusOK {
			return false
		}
		for _, j := range js.Jobs {
			if j.Trigger == jobs.TriggerAlert && j.Final() {
				job = j
				return true
			}
		}
		return false
	})
	rep.add("job %s: %s %.1fs after the alert %s", job.ID, job.State, time.Since(start).Seconds(), job.Reason)
	var full jobs.Job
	if code, b, err := httpGet(ctx, s.url("trainer")+"/v1/jobs/"+job.ID, s.tokens["trainer"], &full); code != http.StatusOK {
		t.Fatalf("GET job %s through the trainer load balancer: %d %v %s", job.ID, code, err, b)
	}
	for _, st := range full.Steps {
		if st.Name == "gate" {
			rep.add("gate: %s", st.Detail)
		}
	}
	// The trainers' tracker store is the shared database too (no
	// --tracking-db): the job's run is recorded there once.
	runID, _ := full.Result["run_id"].(string)
	var runs int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM runs r LEFT JOIN outbox_runs o ON o.run_id = r.id WHERE r.id = $1 OR o.remote_id = $1`, runID).Scan(&runs); err != nil || runs != 1 || runID == "" {
		t.Errorf("the job's run %q in PostgreSQL's tracker store: %d rows (%v), want 1", runID, runs, err)
	}
	rep.add("run %s: in PostgreSQL's tracker store", runID)
	if job.State != jobs.StateSucceeded {
		t.Fatalf("alert job %s: %s: %s", job.ID, job.State, job.Reason)
	}
	for _, r := range []string{"serve-a", "serve-b"} {
		waitUntil(t, r+" to serve version 2", time.Minute, func() bool {
			var meta struct{ Versions []string }
			code, _, _ := httpGet(ctx, s.url(r)+"/v2/models/ridership", "", &meta)
			return code == http.StatusOK && slices.Contains(meta.Versions, "2")
		})
	}
	rep.add("v2 served by serve-a and serve-b %.1fs after the alert", time.Since(start).Seconds())

	// serve-a stops: HAProxy sends everything to serve-b, nothing fails.
	s.compose(2*time.Minute, "stop", "serve-a")
	after := replay(t, s, s.url("serve"), "2015-12-01", "2015-12-10")
	rep.add("serve-a stopped: replay 2015-12-01..10 through the load balancer: %d requests, %d failed, %d labels", after.Sent, after.Failed, after.Labels)
	if after.Failed != 0 || after.LabelsFailed != 0 || after.Labels != after.Sent {
		t.Errorf("with serve-a stopped: %d requests, %d failed, %d labels, %d failed: %v", after.Sent, after.Failed, after.Labels, after.LabelsFailed, after.FirstFailures)
	}
	if code, _, _ := httpGet(ctx, s.url("serve")+"/lb/ready", "", nil); code != http.StatusOK {
		t.Errorf("serve load balancer /lb/ready: %d with one replica up, want 200", code)
	}

	s.downClean(rep)
}

func addr(s *stack, svc string) string { return fmt.Sprintf("127.0.0.1:%d", s.ports[svc]) }

// checkComposeConfig: the compose program itself (`docker compose config`)
// reads docker-compose.yml + docker-compose.postgres.yml as the static tests
// of ./deploy do: the services, replicas on the database secret, the load
// balancers' servers, no inline password.
func checkComposeConfig(t *testing.T, s *stack) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := s.cmd(ctx, "compose", "-f", "docker-compose.yml", "-f", "docker-compose.postgres.yml", "config", "--format", "json")
	out, err := c.Output()
	if err != nil {
		t.Fatalf("docker compose config: %v", err)
	}
	var cfg struct {
		Services map[string]struct {
			Image       string             `json:"image"`
			Environment map[string]*string `json:"environment"`
			Secrets     []struct {
				Source string `json:"source"`
			} `json:"secrets"`
		} `json:"services"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("docker compose config: %v", err)
	}
	var names []string
	for n := range cfg.Services {
		names = append(names, n)
	}
	slices.Sort(names)
	want := []string{"alertmanager", "grafana", "mlflow", "postgres", "prometheus", "serve", "serve-a", "serve-b", "trainer", "trainer-a", "trainer-b"}
	if !slices.Equal(names, want) {
		t.Errorf("docker compose config: services %v, want %v", names, want)
	}
	for _, r := range []string{"serve-a", "serve-b", "trainer-a", "trainer-b"} {
		svc := cfg.Services[r]
		v := svc.Environment["FLYWHEEL_DATABASE_URL_FILE"]
		if v == nil || *v != "/run/secrets/database_url" || !slices.ContainsFunc(svc.Secrets, func(s struct {
			Source string `json:"source"`
		}) bool {
			return s.Source == "database_url"
		}) {
			t.Errorf("docker compose config: %s does not read the database_url secret", r)
		}
	}
	for lb, servers := range map[string][2]string{"serve": {"serve-a:8080", "serve-b:8080"}, "trainer": {"trainer-a:8090", "trainer-b:8090"}} {
		e := cfg.Services[lb].Environment
		if !strings.HasPrefix(cfg.Services[lb].Image, "haproxy:") || e["LB_SERVER_A"] == nil || *e["LB_SERVER_A"] != servers[0] || e["LB_SERVER_B"] == nil || *e["LB_SERVER_B"] != servers[1] {
			t.Errorf("docker compose config: %s is not HAProxy over %v", lb, servers)
		}
	}
	if strings.Contains(string(out), "POSTGRES_PASSWORD\"") || !strings.Contains(string(out), "POSTGRES_PASSWORD_FILE") {
		t.Error("docker compose config: PostgreSQL's password must come from POSTGRES_PASSWORD_FILE only")
	}
}

// postAlert sends Alertmanager one firing FeatureDrift alert of the
// ridership model (action="retrain"), as Prometheus would.
func postAlert(t *testing.T, s *stack) {
	t.Helper()
	body := fmt.Sprintf(`[{"labels": {"alertname": "FeatureDrift", "action": "retrain", "model": "ridership", "version": "1", "severity": "warning"},
		"annotations": {"summary": "posted by TestComposePostgres"}, "startsAt": %q}]`, time.Now().UTC().Format(time.RFC3339))
	resp, err := http.Post(s.url("alertmanager")+"/api/v2/alerts", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("posting an alert to Alertmanager: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("posting an alert to Alertmanager: %s", resp.Status)
	}
}

// replayStats is `flywheel replay --json`'s summary.
type replayStats struct {
	Sent, Failed, Labels int
	LabelsFailed         int      `json:"labels_failed"`
	FirstFailures        []string `json:"first_failures"`
}

// replay runs `flywheel replay` in the cli container against serveURL.
func replay(t *testing.T, s *stack, serveURL, from, until string) replayStats {
	t.Helper()
	out := s.composeOut(5*time.Minute, "run", "--rm", "--no-deps", "-T", "cli", "replay",
		"--serve-url", serveURL, "--from", from, "--until", until, "--speed", "40", "--progress", "0", "--json")
	var st replayStats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("replay output: %v\n%s", err, tail(out, 20))
	}
	return st
}

// splitProxy serves on a loopback port: POST /v1/feedback goes to
// labelsTo, everything else to predictTo. It returns its URL.
func splitProxy(t *testing.T, predictTo, labelsTo string) string {
	t.Helper()
	proxy := func(to string) *httputil.ReverseProxy {
		u, err := url.Parse(to)
		if err != nil {
			t.Fatal(err)
		}
		return httputil.NewSingleHostReverseProxy(u)
	}
	predict, label := proxy(predictTo), proxy(labelsTo)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/feedback" {
			label.ServeHTTP(w, r)
			return
		}
		predict.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// scrapeSum sums the samples of metric (with the label matcher, if any)
// on a replica's /metrics.
func scrapeSum(t *testing.T, base, metric, matcher string) float64 {
	t.Helper()
	_, b, err := httpGet(context.Background(), base+"/metrics", "", nil)
	if err != nil {
		t.Fatalf("GET %s/metrics: %v", base, err)
	}
	var sum float64
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, metric+"{") && !strings.HasPrefix(l, metric+" ") {
			continue
		}
		if matcher != "" && !strings.Contains(l, matcher) {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(l[strings.LastIndex(l, " ")+1:], &v); err == nil {
			sum += v
		}
	}
	return sum
}
