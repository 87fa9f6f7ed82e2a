//go:build containers

package containertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/train/jobs"
)

// The loop's settings, those of the closed-loop test (internal/e2e): a
// replay of 2015-01-01 … 2016-08-28 at replaySpeed days per second against
// the committed v1, while the trainer's base dataset holds the days up to
// 2014-12-31 (FLYWHEEL_BASE_UNTIL in deploy/compose/local.yml); the retrain
// alerts wait alertFor before firing.
const (
	replayFrom  = "2015-01-01"
	replayUntil = "2016-08-28"
	replaySpeed = 15
	alertFor    = 10 * time.Second
	// The image's user (Dockerfile USER).
	imageUID = "10001"
	// The Flywheel image as deploy/compose/local.yml names it.
	flywheelImage = "flywheel-local/flywheel:dev"
)

// staleV1 trains v1 on data up to 2008 and puts it in place of the
// committed v1 in the models volume (run in the cli container).
const staleV1 = `set -e
flywheel train --ratio-to none --backtest-folds 0 --track=false --importance=false \
  --train-until 2008-12-31 --test-from 2009-01-01 --test-until 2009-12-31 --quiet \
  --data data/chicago/chicago.csv --models /tmp/stale
rm -rf models/ridership/1.old && mv models/ridership/1 models/ridership/1.old
cp -a /tmp/stale/ridership/1 models/ridership/1 && rm -rf models/ridership/1.old
ls models/ridership`

// report collects the figures printed at the end (and written to
// var/containers/report.txt for make test-containers).
type report struct {
	mu    sync.Mutex
	lines []string
}

func (r *report) add(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

// TestComposeStack is a user's `docker compose up` on this machine: the
// image built from the Dockerfile, the five services healthy, the retraining
// loop closed inside the containers by a replay through serve's port, state
// kept across a restart of serve, the trainer's version in MLflow, and
// nothing left after `compose down -v`.
func TestComposeStack(t *testing.T) {
	began := time.Now()
	s := newStack(t)
	rep := &report{}
	rep.add("ports: serve %d, trainer %d, mlflow %d, prometheus %d, alertmanager %d (127.0.0.1, host network)",
		s.ports["serve"], s.ports["trainer"], s.ports["mlflow"], s.ports["prometheus"], s.ports["alertmanager"])
	// A project left by an interrupted run goes first.
	s.down()
	s.finish(rep, began, "containers")

	buildImage(s, rep)
	checkImage(t, s, rep)

	// The committed model does not go stale by 2015, so, as the closed-loop
	// test does (internal/e2e staleModel), v1 of the models volume becomes a
	// model trained up to 2008 — trained by `flywheel train` in the cli
	// container, which also seeds the volume from the image.
	start := time.Now()
	s.compose(10*time.Minute, "run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", "cli", "-c", staleV1)
	rep.add("stale v1 (trained up to 2008) in the models volume: %.0fs", time.Since(start).Seconds())

	start = time.Now()
	s.compose(10*time.Minute, "up", "-d", "--wait", "--wait-timeout", "300")
	rep.add("compose up --wait (all healthy): %.0fs", time.Since(start).Seconds())
	checkHealthy(t, s)
	checkNonRoot(t, s)
	checkLoopback(t, s)

	// Counters must be scraped at zero before labels arrive, or increase() misses them.
	ctx := context.Background()
	waitUntil(t, "Prometheus to scrape serve's feedback counters", 60*time.Second, func() bool {
		v, err := harness.Query(ctx, s.url("prometheus"), `flywheel_feedback_labels_total{model="ridership"}`)
		return err == nil && len(v) > 0
	})

	closeLoop(t, s, rep)
	checkMLflow(t, s, rep)
	checkRestartKeepsState(t, s, rep)

	// compose down -v: nothing of the project is left, nothing listens.
	s.downClean(rep)
}

// buildImage builds the Flywheel image from the Dockerfile with buildx
// (BuildKit) and the local base images. Not `compose build`: Compose v5
// hands builds to `buildx bake`, which refuses a host-network build unless
// the network.host entitlement is granted at a prompt, and compose passes
// no --allow for it; the arguments are the override's.
func buildImage(s *stack, rep *report) {
	s.t.Helper()
	start := time.Now()
	s.run(30*time.Minute, "buildx", "build", "--progress", "plain", "--network", "host", "--allow", "network.host",
		"--build-arg", "GO_IMAGE="+os.Getenv("FLYWHEEL_LOCAL_GO_IMAGE"),
		"--build-arg", "NODE_IMAGE="+os.Getenv("FLYWHEEL_LOCAL_NODE_IMAGE"),
		"--build-arg", "RUNTIME_IMAGE="+os.Getenv("FLYWHEEL_LOCAL_RUNTIME_IMAGE"),
		"--build-arg", "VERSION=dev", "-t", flywheelImage, ".")
	rep.add("image build: %.0fs", time.Since(start).Seconds())
}

// checkImage: non-root user, size reported, OCI labels.
func checkImage(t *testing.T, s *stack, rep *report) {
	t.Helper()
	img := flywheelImage
	out := s.run(time.Minute, "image", "inspect", "--format", `{{.Config.User}}|{{.Size}}|{{index .Config.Labels "org.opencontainers.image.title"}}`, img)
	f := strings.Split(strings.TrimSpace(out), "|")
	if len(f) != 3 {
		t.Fatalf("image inspect: %q", out)
	}
	if uid := strings.SplitN(f[0], ":", 2)[0]; uid != imageUID {
		t.Errorf("image user %q, want %s (non-root)", f[0], imageUID)
	}
	size, _ := strconv.ParseInt(f[1], 10, 64)
	if f[2] != "flywheel" {
		t.Errorf("image title label %q", f[2])
	}
	rep.add("image %s: user %s, size %.0f MB (local Debian bookworm base; upstream debian:12-slim differs)", img, f[0], float64(size)/1e6)
}

// checkHealthy: the stack's services run and report healthy; Grafana is not started.
func checkHealthy(t *testing.T, s *stack) {
	t.Helper()
	got := map[string]container{}
	for _, c := range s.ps(false) {
		got[c.Service] = c
	}
	for _, svc := range s.cfg.services {
		c, ok := got[svc]
		if !ok {
			t.Errorf("service %s is not running", svc)
			continue
		}
		if c.State != "running" || c.Health != "healthy" {
			t.Errorf("service %s: state %q health %q, want running healthy", svc, c.State, c.Health)
		}
	}
	if _, ok := got["grafana"]; ok {
		t.Error("grafana started: the local override keeps it behind the grafana profile")
	}
}

// checkNonRoot: serve and the trainer run as the image's user and own the
// named volumes they write (seeded from the image on first use).
func checkNonRoot(t *testing.T, s *stack) {
	t.Helper()
	for _, svc := range []string{"serve", "trainer"} {
		out := s.composeOut(time.Minute, "exec", "-T", svc, "sh", "-c",
			"id -u; stat -c '%u %n' /var/lib/flywheel/models /var/lib/flywheel/data /var/lib/flywheel/var")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 || strings.TrimSpace(lines[0]) != imageUID {
			t.Errorf("%s: id -u and volume owners: %q, want uid %s", svc, out, imageUID)
			continue
		}
		for _, l := range lines[1:] {
			if !strings.HasPrefix(l, imageUID+" ") {
				t.Errorf("%s: volume %s is not owned by %s", svc, l, imageUID)
			}
		}
	}
}

// checkLoopback: with host networking every service must bind 127.0.0.1
// only; the health probes already showed each answers on its port.
func checkLoopback(t *testing.T, s *stack) {
	t.Helper()
	out := s.composeOut(time.Minute, "exec", "-T", "serve", "cat", "/proc/net/tcp", "/proc/net/tcp6")
	own := map[int]string{}
	for svc, p := range s.ports {
		own[p] = svc
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || f[3] != "0A" { // LISTEN
			continue
		}
		local := f[1]
		i := strings.LastIndex(local, ":")
		port, err := strconv.ParseInt(local[i+1:], 16, 32)
		if err != nil {
			continue
		}
		svc, ours := own[int(port)]
		if !ours {
			continue
		}
		if ip := local[:i]; ip != "0100007F" && ip != "00000000000000000000000001000000" {
			t.Errorf("%s listens on %s (hex), not 127.0.0.1", svc, local)
		}
	}
}

// closeLoop replays 2015 → 2016 through serve's port from the cli
// container and waits for drift → alert → retrain → the next version served.
func closeLoop(t *testing.T, s *stack, rep *report) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu                  sync.Mutex
		fired, served       time.Time
		firedAlert, version string
	)
	// The committed model repository's newest version is the champion;
	// the retrain publishes the next one.
	var meta struct{ Versions []string }
	if code, b, err := httpGet(ctx, s.url("serve")+"/v2/models/ridership", "", &meta); code != 200 || err != nil {
		t.Fatalf("model metadata: %d %v %s", code, err, b)
	}
	champion := 0
	for _, v := range meta.Versions {
		if n, err := strconv.Atoi(v); err == nil && n > champion {
			champion = n
		}
	}
	next := strconv.Itoa(champion + 1)
	rep.add("serving before the replay: ridership versions %v (champion %d)", meta.Versions, champion)
	replayStart := time.Now()
	go func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			mu.Lock()
			haveFired, haveServed := !fired.IsZero(), !served.IsZero()
			mu.Unlock()
			if !haveFired {
				if as, err := harness.Alerts(ctx, s.url("prometheus")); err == nil {
					for _, a := range as {
						if a.State == "firing" && a.Labels["action"] == "retrain" {
							mu.Lock()
							fired, firedAlert = time.Now(), a.Labels["alertname"]+"{version="+a.Labels["version"]+"}"
							mu.Unlock()
							break
						}
					}
				}
			}
			if !haveServed {
				var meta struct{ Versions []string }
				if code, _, _ := httpGet(ctx, s.url("serve")+"/v2/models/ridership", "", &meta); code == 200 {
					for _, v := range meta.Versions {
						if v == next {
							mu.Lock()
							served, version = time.Now(), v
							mu.Unlock()
						}
					}
				}
			}
		}
	}()

	// `flywheel replay` in the cli container (host network) against serve's port.
	out := s.composeOut(10*time.Minute, "run", "--rm", "--no-deps", "-T", "cli", "replay",
		"--serve-url", s.url("serve"), "--from", replayFrom, "--until", replayUntil,
		"--speed", strconv.Itoa(replaySpeed), "--progress", "0", "--json")
	replayDur := time.Since(replayStart)
	// --json prints the final counts (train/replay.Stats) on standard output.
	var st struct {
		Sent, Failed, Labels int
		LabelsFailed         int `json:"labels_failed"`
		Versions             map[string]struct {
			Requests int `json:"requests"`
		}
		FirstFailures []string `json:"first_failures"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("replay output: %v\n%s", err, tail(out, 20))
	}
	rep.add("replay %s..%s at %d days/s in the cli container: %d requests, %d failed, %d labels, %d failed (%.0fs)",
		replayFrom, replayUntil, replaySpeed, st.Sent, st.Failed, st.Labels, st.LabelsFailed, replayDur.Seconds())
	if st.Failed != 0 || st.LabelsFailed != 0 {
		t.Errorf("replay: %d requests and %d labels failed: %v", st.Failed, st.LabelsFailed, st.FirstFailures)
	}

	// The alert job finishes (it may still be running when the replay ends).
	var alertJob jobs.Job
	waitUntil(t, "the alert's retraining job to finish", 4*time.Minute, func() bool {
		var js struct{ Jobs []jobs.Job }
		if code, _, _ := httpGet(ctx, s.url("trainer")+"/v1/jobs", s.tokens["trainer"], &js); code != 200 {
			return false
		}
		for _, j := range js.Jobs {
			if j.Trigger == jobs.TriggerAlert && j.Final() {
				alertJob = j
				return true
			}
		}
		return false
	})
	var full jobs.Job
	if code, b, err := httpGet(ctx, s.url("trainer")+"/v1/jobs/"+alertJob.ID, s.tokens["trainer"], &full); code != 200 || err != nil {
		t.Fatalf("GET job %s: %d %v %s", alertJob.ID, code, err, b)
	}
	var steps []string
	for _, st := range full.Steps {
		steps = append(steps, fmt.Sprintf("%s %.1fs", st.Name, st.Seconds))
	}
	rep.add("job %s (%s, %s): %s; %s", full.ID, full.Trigger, strings.Join(full.Alerts, ","), full.State, strings.Join(steps, ", "))
	if full.State != jobs.StateSucceeded {
		t.Fatalf("alert job %s: %s: %s", full.ID, full.State, full.Reason)
	}
	if v, _ := full.Result["version"].(float64); strconv.Itoa(int(v)) != next {
		t.Errorf("alert job published version %v, want %s", full.Result["version"], next)
	}
	waitUntil(t, "serve to list version "+next, time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return !served.IsZero()
	})
	mu.Lock()
	defer mu.Unlock()
	if fired.IsZero() {
		t.Fatal("no retrain alert was seen firing in Prometheus")
	}
	rep.add("drift → %s firing: %.1fs after the replay started; v%s served %.1fs after firing",
		firedAlert, fired.Sub(replayStart).Seconds(), version, served.Sub(fired).Seconds())
	if st.Versions[next].Requests == 0 {
		t.Errorf("no replayed request was answered by version %s (versions %v)", next, st.Versions)
	}
	rep.add("answers per version: v%d %d, v%s %d", champion, st.Versions[strconv.Itoa(champion)].Requests, next, st.Versions[next].Requests)
	s.env["FLYWHEEL_TEST_VERSION"] = next
	s.env["FLYWHEEL_TEST_RUN_ID"], _ = full.Result["run_id"].(string)
	s.env["FLYWHEEL_TEST_REGISTERED"] = fmt.Sprint(full.Result["registered_version"])
}

// checkMLflow: the trainer's run and registered version are in the MLflow
// container, and alias champion points at the run that published v2.
func checkMLflow(t *testing.T, s *stack, rep *report) {
	t.Helper()
	ctx := context.Background()
	runID := s.env["FLYWHEEL_TEST_RUN_ID"]
	if runID == "" {
		t.Fatal("the alert job has no run_id: the trainer tracked nothing")
	}
	var run struct {
		Run struct {
			Info struct {
				RunID  string `json:"run_id"`
				Status string `json:"status"`
			} `json:"info"`
		} `json:"run"`
	}
	var mv struct {
		ModelVersion struct {
			Version string `json:"version"`
			RunID   string `json:"run_id"`
		} `json:"model_version"`
	}
	// The trainer writes to MLflow directly; a run recorded while MLflow was
	// unreachable reaches it with the next sync (5s in the local override).
	waitUntil(t, "the trainer's run and alias champion in MLflow", 90*time.Second, func() bool {
		code, _, _ := httpGet(ctx, s.url("mlflow")+"/api/2.0/mlflow/runs/get?run_id="+url.QueryEscape(runID), "", &run)
		if code != 200 {
			return false
		}
		code, _, _ = httpGet(ctx, s.url("mlflow")+"/api/2.0/mlflow/registered-models/alias?name=ridership&alias=champion", "", &mv)
		return code == 200 && mv.ModelVersion.RunID == runID
	})
	if run.Run.Info.Status != "FINISHED" {
		t.Errorf("MLflow run %s status %s", runID, run.Run.Info.Status)
	}
	if reg := s.env["FLYWHEEL_TEST_REGISTERED"]; reg != "<nil>" && reg != mv.ModelVersion.Version {
		t.Errorf("MLflow alias champion → version %s, the job registered %s", mv.ModelVersion.Version, reg)
	}
	rep.add("MLflow: run %s %s, registered ridership version %s, alias champion → it", runID, run.Run.Info.Status, mv.ModelVersion.Version)
}

// checkRestartKeepsState: the prediction log and labels live on the state
// volume, the published versions on the models volume; both survive a
// restart of the serve container.
func checkRestartKeepsState(t *testing.T, s *stack, rep *report) {
	t.Helper()
	ctx := context.Background()
	labelled := func() int {
		code, b, err := httpGet(ctx, s.url("serve")+"/v1/feedback/export?model=ridership", s.tokens["admin"], nil)
		if err != nil || code != 200 {
			t.Fatalf("feedback export: %d %v %s", code, err, b)
		}
		n := 0
		for _, l := range strings.Split(string(b), "\n") {
			if strings.TrimSpace(l) != "" {
				n++
			}
		}
		return n
	}
	before := labelled()
	if before == 0 {
		t.Fatal("the prediction log holds no labelled rows after the replay")
	}
	start := time.Now()
	s.compose(3*time.Minute, "restart", "serve")
	waitUntil(t, "serve healthy after the restart", 2*time.Minute, func() bool {
		for _, c := range s.ps(false) {
			if c.Service == "serve" {
				return c.Health == "healthy"
			}
		}
		return false
	})
	after := labelled()
	if after != before {
		t.Errorf("labelled predictions: %d before the restart, %d after", before, after)
	}
	var meta struct{ Versions []string }
	if code, b, err := httpGet(ctx, s.url("serve")+"/v2/models/ridership", "", &meta); code != 200 || err != nil {
		t.Fatalf("model metadata after the restart: %d %v %s", code, err, b)
	}
	if v := s.env["FLYWHEEL_TEST_VERSION"]; !contains(meta.Versions, v) {
		t.Errorf("after the restart serve has versions %v, want %s among them", meta.Versions, v)
	}
	rep.add("serve restarted in %.0fs: %d labelled predictions before and %d after (state volume); versions %v (models volume)",
		time.Since(start).Seconds(), before, after, meta.Versions)
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
