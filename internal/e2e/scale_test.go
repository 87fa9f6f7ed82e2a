package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/monitoring"
	"github.com/flywheel-ml/flywheel/train/jobs"
	"github.com/flywheel-ml/flywheel/train/replay"
)

// scaled is the running system of TestScaledLoop.
type scaled struct {
	t          *testing.T
	dir        string
	models     string
	dbURL      string
	db         *sql.DB
	bin        string
	serveAddrs []string
	serves     []*harness.Process
	trainers   map[string]*harness.Process
	lb         *harness.LoadBalancer
	prom, am   *harness.Process
}

func (s *scaled) startServe(i int) *harness.Process {
	addr := s.serveAddrs[i]
	return harness.StartFlywheel(s.t, s.bin, "serve", addr, "/v2/models/ridership/ready",
		"--listen", addr, "--models", s.models, "--admin-token", loopAdminToken, "--database", s.dbURL,
		"--drift-window", "200", "--drift-min-rows", "60", "--rescan-interval", "1s",
		"--predlog-flush-interval", "20ms", "--feedback-store-metrics-interval", "1s")
}

// startScaled runs PostgreSQL, three serve replicas and two trainers on
// it, HAProxy in front of each group, Alertmanager (webhook to the trainers'
// load balancer) and Prometheus scraping every replica.
func startScaled(t *testing.T) *scaled {
	s := &scaled{t: t, dir: t.TempDir(), trainers: map[string]*harness.Process{}}
	pg := harness.StartPostgres(t, harness.PostgresOptions{})
	s.dbURL = pg.NewDatabase(t)
	db, err := sql.Open("pgx", s.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s.db = db
	root := harness.RepoRoot(t)
	var tokenFile string
	s.models, tokenFile = writeLoopFiles(t, s.dir)
	s.bin = flywheelBin(t)
	for range 3 {
		s.serveAddrs = append(s.serveAddrs, harness.FreeAddr(t))
	}
	// Replicas start one after the other: each applies (or finds) the
	// schema under PostgreSQL's advisory lock.
	for i := range s.serveAddrs {
		s.serves = append(s.serves, s.startServe(i))
	}
	trainerAddrs := map[string]string{"trainer-a": harness.FreeAddr(t), "trainer-b": harness.FreeAddr(t)}
	servers := []string{trainerAddrs["trainer-a"], trainerAddrs["trainer-b"]}
	// HAProxy first: the trainers are told the serve pool's address; their
	// own pool's servers count as down until they answer.
	s.lb = harness.StartHAProxy(t,
		harness.Pool{Name: "serve", Servers: s.serveAddrs, HealthPath: "/v2/health/ready"},
		harness.Pool{Name: "trainer", Servers: servers, HealthPath: "/health/ready"})
	for _, name := range []string{"trainer-a", "trainer-b"} {
		addr := trainerAddrs[name]
		s.trainers[name] = harness.StartFlywheel(t, s.bin, "trainer", addr, "/health/ready",
			"--listen", addr, "--name", name, "--token-file", tokenFile, "--database", s.dbURL, "--lease", "3s",
			"--models", s.models, "--work-dir", filepath.Join(s.dir, name, "work"),
			"--data", filepath.Join(root, "data", "chicago", "chicago.csv"),
			"--serve-url", s.lb.URL("serve"), "--admin-token", loopAdminToken, "--tracking-db", filepath.Join(s.dir, name, "tracking.db"),
			"--algorithm", "gbdt", "--holdout-days", "56", "--base-until", baseUntil, "--window-days", "1095",
			"--cooldown", "30m", "--ready-wait", "60s")
	}

	am, err := monitoring.RenderAlertmanager(monitoring.Alertmanager, monitoring.AlertmanagerOptions{
		TrainerURL: s.lb.URL("trainer") + "/v1/alerts", GroupWait: time.Second, GroupInterval: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	am = regexp.MustCompile(`(?m)^(\s*)repeat_interval:\s*\S+\s*$`).ReplaceAll(am, []byte("${1}repeat_interval: 3s"))
	s.am = harness.StartAlertmanager(t, harness.AlertmanagerOptions{Config: string(am),
		Files: map[string]string{"secrets/trainer-token": loopToken + "\n"}})
	rules, err := monitoring.RenderAlerts(monitoring.Alerts, monitoring.RenderOptions{For: 5 * time.Second,
		ForAlert: map[string]time.Duration{"FeatureDrift": alertFor, "ModelErrorHigh": alertFor}})
	if err != nil {
		t.Fatal(err)
	}
	prom, err := monitoring.RenderPrometheus(monitoring.Prometheus, monitoring.PrometheusOptions{Serve: "SERVE", Trainer: "TRAINER",
		Alertmanager: s.am.Addr, ScrapeInterval: time.Second, EvaluationInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Every replica is a target of its job.
	cfg := strings.Replace(string(prom), `"SERVE"`, `"`+strings.Join(s.serveAddrs, `", "`)+`"`, 1)
	cfg = strings.Replace(cfg, `"TRAINER"`, `"`+strings.Join(servers, `", "`)+`"`, 1)
	s.prom = harness.StartPrometheus(t, harness.PrometheusOptions{Config: cfg, Files: map[string]string{"alerts.yml": string(rules)}})
	waitUntil(t, "Prometheus to scrape the three replicas", 30*time.Second, func() bool {
		v, err := harness.Query(context.Background(), s.prom.URL, `count(flywheel_feedback_labels_total{model="ridership"})`)
		return err == nil && len(v) == 1 && v[0].Value == 3
	})
	return s
}

// TestScaledLoop is the retraining loop across machines, on loopback: three
// serve replicas behind HAProxy (round robin) and two trainers, all on one
// PostgreSQL 15, with Prometheus and Alertmanager. The 2015–2016 replay goes
// through the load balancer; one replica is killed with SIGKILL mid-replay
// (and restarted), and so is the trainer holding the retraining job. Drift
// fires, exactly one job retrains (taken over by the other trainer at lease
// expiry), one version is published and all three replicas serve it; every
// acknowledged label is stored exactly once, and the live MAE Prometheus
// shows equals the one computed from the store.
func TestScaledLoop(t *testing.T) {
	began := time.Now()
	s := startScaled(t)
	t.Logf("system up in %.1fs", time.Since(began).Seconds())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	recs, err := replay.ReadCSV(filepath.Join(harness.RepoRoot(t), "data", "chicago", "chicago.csv"), "date", "ridership")
	if err != nil {
		t.Fatal(err)
	}
	cfg := replay.DefaultConfig()
	cfg.ServeURL, cfg.DaysPerSecond, cfg.LabelDelay, cfg.ProgressEvery = s.lb.URL("serve"), replaySpeed, 1, 0
	cfg.From, _ = time.Parse(replay.DateLayout, replayFrom)
	cfg.Until, _ = time.Parse(replay.DateLayout, replayUntil)
	var mu sync.Mutex
	answered := 0
	cfg.Observe = func(p replay.Prediction) { mu.Lock(); answered++; mu.Unlock() }
	r, err := replay.New(cfg, recs, chicagoSet().FromMap, io.Discard)
	if err != nil {
		t.Fatal(err)
	}

	// Chaos: SIGKILL replica 1 once 100 requests were answered, restart it
	// 3s later on the same address; SIGKILL the trainer holding the job as
	// soon as a job runs.
	var killedTrainer, killedStep string
	chaos := make(chan struct{})
	cctx, cancelChaos := context.WithCancel(ctx)
	defer cancelChaos()
	go func() {
		defer close(chaos)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		replicaKilled := false
		for {
			select {
			case <-cctx.Done():
				return
			case <-tick.C:
			}
			mu.Lock()
			n := answered
			mu.Unlock()
			if !replicaKilled && n >= 100 {
				replicaKilled = true
				s.serves[1].Kill()
				t.Logf("killed serve replica 1 (SIGKILL) after %d answers", n)
				time.Sleep(3 * time.Second)
				s.serves[1] = s.startServe(1)
				t.Log("restarted serve replica 1")
			}
			var owner, step string
			err := s.db.QueryRowContext(cctx, `SELECT owner, step FROM jobs WHERE state = 'running' LIMIT 1`).Scan(&owner, &step)
			if err == nil && owner != "" && step != "" { // mid-run: inside a step
				if p, ok := s.trainers[owner]; ok {
					p.Kill()
					killedTrainer, killedStep = owner, step
					t.Logf("killed %s (SIGKILL) holding the job at step %q", owner, step)
					if replicaKilled {
						return
					}
				}
			}
			if killedTrainer != "" && replicaKilled {
				return
			}
		}
	}()

	st, err := r.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("replay: %s", st.Line())
	// The job may still be ahead: give the chaos a bounded while.
	select {
	case <-chaos:
	case <-time.After(90 * time.Second):
		cancelChaos()
		<-chaos
	}
	if killedTrainer == "" {
		t.Fatal("no job ran during the replay: nothing to kill")
	}
	survivor := "trainer-a"
	if killedTrainer == survivor {
		survivor = "trainer-b"
	}

	// Exactly one job, from the alert, finished by the survivor as attempt 2.
	var list []jobs.Job
	lt := &loop{t: t}
	for deadline := time.Now().Add(120 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var out struct{ Jobs []jobs.Job }
		lt.get(s.trainers[survivor].URL+"/v1/jobs", &out)
		list = out.Jobs
		if len(list) > 0 && list[len(list)-1].Final() {
			break
		}
		if time.Now().After(deadline) {
			for _, x := range list {
				var full jobs.Job
				lt.get(s.trainers[survivor].URL+"/v1/jobs/"+x.ID, &full)
				t.Logf("job %s: %s attempt %d step %q reason %q", full.ID, full.State, full.Attempt, full.Step, full.Reason)
				for _, st := range full.Steps {
					t.Logf("  attempt %d %-8s %-11s %6.2fs %s", st.Attempt, st.Name, st.State, st.Seconds, st.Detail)
				}
			}
			t.Fatalf("timed out waiting for the retraining job to finish on %s", survivor)
		}
	}
	if len(list) != 1 {
		t.Fatalf("%d jobs, want exactly 1: %+v", len(list), list)
	}
	j := list[0]
	if j.State != jobs.StateSucceeded || j.Trigger != jobs.TriggerAlert || j.Attempt != 2 {
		t.Fatalf("job %s: %s trigger %s attempt %d: %s", j.ID, j.State, j.Trigger, j.Attempt, j.Reason)
	}
	var owner string
	if err := s.db.QueryRow(`SELECT owner FROM jobs WHERE id = $1`, j.ID).Scan(&owner); err != nil || owner != survivor {
		t.Errorf("job finished by %q (%v), want %s", owner, err, survivor)
	}

	// One version published, served by all three replicas.
	entries, _ := os.ReadDir(filepath.Join(s.models, "ridership"))
	var versions []string
	for _, e := range entries {
		versions = append(versions, e.Name())
	}
	if strings.Join(versions, ",") != "1,2" {
		t.Fatalf("model versions %v, want exactly one new one (1,2)", versions)
	}
	for i, addr := range s.serveAddrs {
		waitUntil(t, fmt.Sprintf("replica %d to serve version 2", i), 30*time.Second, func() bool {
			return status(t, "http://"+addr+"/v2/models/ridership/versions/2/ready") == 200
		})
	}

	// Every acknowledged label stored exactly once.
	var labels, distinct, maxRev int
	if err := s.db.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT id), COALESCE(MAX(revisions), 0) FROM labels`).Scan(&labels, &distinct, &maxRev); err != nil {
		t.Fatal(err)
	}
	if labels != st.Labels || distinct != labels || maxRev != 1 {
		t.Errorf("labels stored %d (%d distinct, max revisions %d); acknowledged %d", labels, distinct, maxRev, st.Labels)
	}
	// Not acknowledged: the labels of predictions still queued in the killed
	// replica (its log is asynchronous) and requests cut by the kill.
	if st.LabelsFailed > 3 || st.Failed > 3 {
		t.Errorf("replay: %d of %d requests and %d labels failed: %v", st.Failed, st.Sent, st.LabelsFailed, st.FirstFailures)
	}

	// Live MAE in Prometheus (max over replicas) equals the store's.
	want := map[string]float64{}
	rows, err := s.db.Query(`SELECT version, SUM(ABS(value - prediction)) / COUNT(*) FROM labels WHERE prediction IS NOT NULL GROUP BY version`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v int
		var mae float64
		if err := rows.Scan(&v, &mae); err != nil {
			t.Fatal(err)
		}
		want[fmt.Sprint(v)] = mae
	}
	rows.Close()
	var got map[string]float64
	q := `max by (model, version) (flywheel_feedback_store_absolute_error{model="ridership"}) / max by (model, version) (flywheel_feedback_store_labels{model="ridership"})`
	waitUntil(t, "Prometheus's live MAE to equal the store's", 30*time.Second, func() bool {
		v, err := harness.Query(ctx, s.prom.URL, q)
		if err != nil {
			return false
		}
		got = map[string]float64{}
		for _, x := range v {
			got[x.Labels["version"]] = x.Value
		}
		if len(got) != len(want) {
			return false
		}
		for k, w := range want {
			if math.Abs(got[k]-w) > 1e-9*math.Max(1, w) {
				return false
			}
		}
		return true
	})
	t.Logf("scaled loop: %d requests, %d labels stored once each, live MAE %v (store %v), job %s attempt 2 by %s after %s died at step %q; test %.0fs",
		st.Sent, labels, got, want, j.ID, survivor, killedTrainer, killedStep, time.Since(began).Seconds())
}

// status GETs url and returns the status code.
func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
