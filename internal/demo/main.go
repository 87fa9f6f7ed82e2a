// Command demo runs the whole retraining loop on loopback for a person to
// watch (`make demo`): serve with a ridership v1 (by default a deliberately
// stale one trained at start, harness.TrainStaleModel; -start-model committed
// uses the committed model, which rarely goes stale now), the trainer,
// Prometheus and Alertmanager (Debian's binaries) with the committed configs
// rendered to free local ports and a compressed timescale, and a replay of
// 2013 → 2016 traffic with labels. It prints a line whenever an alert changes
// state, a job is queued, runs a step or finishes, and serve's versions
// change; Ctrl-C (or the end of the replay, or -timeout) stops everything it
// started. Logs and data stay in the printed work directory.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/monitoring"
)

type options struct {
	bin, dir, from, until, algorithm string
	startModel                       string // stale or committed
	speed                            float64
	alertFor, window, cooldown       time.Duration
	timeout                          time.Duration
	windowDays                       int
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin/flywheel", "flywheel binary")
	flag.StringVar(&o.dir, "dir", "", "work directory (default: a new one under var/demo/)")
	flag.StringVar(&o.from, "from", "2013-01-01", "first day replayed")
	flag.StringVar(&o.until, "until", "2016-08-28", "last day replayed")
	flag.StringVar(&o.startModel, "start-model", "stale", "v1 served at start: stale (trained at start up to 2008, so alerts fire and the loop retrains) or committed (models/ridership/1, which rarely goes stale in 2013–2016)")
	flag.Float64Var(&o.speed, "speed", 20, "replay speed in days per second")
	flag.StringVar(&o.algorithm, "algorithm", "gbdt", "algorithm of candidates (empty: the champion card's)")
	flag.DurationVar(&o.alertFor, "for", 10*time.Second, "`for:` of FeatureDrift and ModelErrorHigh (production: 10m and 5m)")
	flag.DurationVar(&o.window, "window", 20*time.Second, "ModelErrorHigh's error window (production: 30m)")
	flag.DurationVar(&o.cooldown, "cooldown", 30*time.Second, "trainer cooldown per alert group (production: 1h)")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "stop everything after this long")
	flag.IntVar(&o.windowDays, "window-days", 0, "candidates train on this many days before the holdout (0: every row since 2001)")
	flag.Parse()
	if o.startModel != "stale" && o.startModel != "committed" {
		fmt.Fprintf(os.Stderr, "demo: --start-model %q: want stale or committed\n", o.startModel)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

var began = time.Now()

func say(format string, args ...any) {
	fmt.Printf("[%6.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
}

// addr returns 127.0.0.1:<the contract port> when it is free, else a free port.
func addr(port int) (string, error) {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return "", err
		}
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// proc is a started program in its own process group.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

type procs struct {
	mu   sync.Mutex
	list []*proc
}

func (ps *procs) start(name, logPath, dir string, env []string, bin string, args ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

// stopAll sends SIGTERM in reverse start order and kills what is left after 10s.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for i := len(ps.list) - 1; i >= 0; i-- {
		p := ps.list[i]
		select {
		case <-p.done:
			continue
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			say("stopped %s", p.name)
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
			say("killed %s (no exit 10s after SIGTERM)", p.name)
		}
	}
}

func waitReady(ctx context.Context, p *proc, url string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (see its log)", p.name)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready at %s after 60s", p.name, url)
}

func run(ctx context.Context, o options) error {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s: %w (make build)", o.bin, err)
	}
	root, _ := os.Getwd()
	if o.dir == "" {
		if err := os.MkdirAll(filepath.Join("var", "demo"), 0o755); err != nil {
			return err
		}
		if o.dir, err = os.MkdirTemp(filepath.Join("var", "demo"), time.Now().Format("20060102-150405-")); err != nil {
			return err
		}
	}
	dir, _ := filepath.Abs(o.dir)
	models := filepath.Join(dir, "models")
	v1 := "committed v1, trained up to 2011"
	if o.startModel == "committed" {
		if err := copyModel(filepath.Join(root, "models", "ridership", "1"), filepath.Join(models, "ridership", "1")); err != nil {
			return err
		}
	} else {
		v1 = "stale v1, trained up to 2008"
		say("training %s into %s (--start-model committed serves models/ridership/1 instead)", harness.StaleModelSummary, models)
		if err := harness.TrainStaleModel(ctx, bin, filepath.Join(root, "data", "chicago", "chicago.csv"), models); err != nil {
			return err
		}
	}
	const adminToken, trainerToken = "demo-admin-token", "demo-trainer-token"
	if err := os.WriteFile(filepath.Join(dir, "trainer-token"), []byte(trainerToken+"\n"), 0o600); err != nil {
		return err
	}
	addrs := map[string]string{}
	for n, port := range map[string]int{"serve": 8080, "trainer": 8090, "prometheus": 9090, "alertmanager": 9093} {
		if addrs[n], err = addr(port); err != nil {
			return err
		}
	}
	say("work directory %s (logs: *.log)", dir)

	ps := &procs{}
	defer ps.stopAll()
	env := []string{"FLYWHEEL_ORT_LIB=" + filepath.Join(root, "lib", "libonnxruntime.so.1")}
	serve, err := ps.start("serve", filepath.Join(dir, "serve.log"), dir, env, bin, "serve", "--listen", addrs["serve"], "--models", models,
		"--admin-token", adminToken, "--predlog-db", filepath.Join(dir, "flywheel.db"), "--drift-window", "200", "--drift-min-rows", "60")
	if err != nil {
		return err
	}
	if err := waitReady(ctx, serve, "http://"+addrs["serve"]+"/v2/models/ridership/ready"); err != nil {
		return err
	}
	say("serve        http://%s  (ridership %s)", addrs["serve"], v1)
	trainerArgs := []string{"trainer", "--listen", addrs["trainer"], "--token-file", filepath.Join(dir, "trainer-token"),
		"--db", filepath.Join(dir, "jobs.db"), "--models", models, "--work-dir", filepath.Join(dir, "work"),
		"--data", filepath.Join(root, "data", "chicago", "chicago.csv"), "--serve-url", "http://" + addrs["serve"],
		"--admin-token", adminToken, "--tracking-db", filepath.Join(dir, "tracking.db"), "--cooldown", o.cooldown.String(),
		"--holdout-days", "56", "--window-days", fmt.Sprint(o.windowDays)}
	if o.algorithm != "" {
		trainerArgs = append(trainerArgs, "--algorithm", o.algorithm)
	}
	trainer, err := ps.start("trainer", filepath.Join(dir, "trainer.log"), dir, env, bin, trainerArgs...)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, trainer, "http://"+addrs["trainer"]+"/health/ready"); err != nil {
		return err
	}
	say("trainer      http://%s  (jobs: /v1/jobs; tracker: %s)", addrs["trainer"], filepath.Join(dir, "tracking.db"))

	amDir := filepath.Join(dir, "alertmanager")
	amCfg, err := monitoring.RenderAlertmanager(monitoring.Alertmanager, monitoring.AlertmanagerOptions{
		TrainerURL: "http://" + addrs["trainer"] + "/v1/alerts", GroupWait: time.Second, GroupInterval: 2 * time.Second,
		RepeatInterval: 10 * time.Second})
	if err != nil {
		return err
	}
	if err := writeFiles(amDir, map[string][]byte{"alertmanager.yml": amCfg, "secrets/trainer-token": []byte(trainerToken + "\n")}); err != nil {
		return err
	}
	am, err := ps.start("alertmanager", filepath.Join(dir, "alertmanager.log"), amDir, nil, "prometheus-alertmanager",
		"--config.file=alertmanager.yml", "--storage.path=data", "--web.listen-address="+addrs["alertmanager"], "--cluster.listen-address=")
	if err != nil {
		return err
	}
	if err := waitReady(ctx, am, "http://"+addrs["alertmanager"]+"/-/ready"); err != nil {
		return err
	}
	say("alertmanager http://%s", addrs["alertmanager"])

	promDir := filepath.Join(dir, "prometheus")
	rules, err := monitoring.RenderAlerts(monitoring.Alerts, monitoring.RenderOptions{For: 10 * time.Second,
		ForAlert: map[string]time.Duration{"FeatureDrift": o.alertFor, "ModelErrorHigh": o.alertFor}})
	if err != nil {
		return err
	}
	rules = []byte(strings.ReplaceAll(string(rules), "[30m]", "["+o.window.String()+"]"))
	promCfg, err := monitoring.RenderPrometheus(monitoring.Prometheus, monitoring.PrometheusOptions{Serve: addrs["serve"], Trainer: addrs["trainer"],
		Alertmanager: addrs["alertmanager"], ScrapeInterval: time.Second, EvaluationInterval: time.Second})
	if err != nil {
		return err
	}
	if err := writeFiles(promDir, map[string][]byte{"prometheus.yml": promCfg, "alerts.yml": rules}); err != nil {
		return err
	}
	prom, err := ps.start("prometheus", filepath.Join(dir, "prometheus.log"), promDir, nil, "prometheus", "--config.file=prometheus.yml",
		"--storage.tsdb.path=data", "--web.listen-address="+addrs["prometheus"], "--rules.alert.resend-delay=1s")
	if err != nil {
		return err
	}
	if err := waitReady(ctx, prom, "http://"+addrs["prometheus"]+"/-/ready"); err != nil {
		return err
	}
	say("prometheus   http://%s  (alerts: /alerts; FeatureDrift/ModelErrorHigh for: %s, error window %s)", addrs["prometheus"], o.alertFor, o.window)
	// Let Prometheus see serve's counters at zero before labels arrive.
	w := &watcher{prom: "http://" + addrs["prometheus"], trainer: "http://" + addrs["trainer"], serve: "http://" + addrs["serve"],
		trainerToken: trainerToken, alerts: map[string]string{}, jobs: map[string]string{}}
	for i := 0; i < 50 && !w.scraped(ctx); i++ {
		time.Sleep(200 * time.Millisecond)
	}

	say("replay %s → %s at %g days/s (labels one day later)", o.from, o.until, o.speed)
	replayCmd := exec.CommandContext(ctx, bin, "replay", "--serve-url", "http://"+addrs["serve"], "--data", filepath.Join(root, "data", "chicago", "chicago.csv"),
		"--from", o.from, "--until", o.until, "--speed", fmt.Sprint(o.speed), "--progress", "5s")
	replayCmd.Dir = dir
	replayCmd.Cancel = func() error { return replayCmd.Process.Signal(os.Interrupt) }
	out, err := replayCmd.StderrPipe()
	if err != nil {
		return err
	}
	replayCmd.Stdout = io.Discard
	if err := replayCmd.Start(); err != nil {
		return err
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for lines != nil {
		select {
		case <-ctx.Done():
			say("stopping (%v)", context.Cause(ctx))
			_ = replayCmd.Wait()
			return nil
		case l, ok := <-lines:
			if !ok {
				lines = nil
				continue
			}
			say("replay | %s", l)
		case <-tick.C:
			w.poll(ctx)
		}
	}
	if err := replayCmd.Wait(); err != nil {
		say("replay ended: %v", err)
	}
	// Let a queued or running job finish (bounded: an mlp candidate takes
	// tens of seconds on a busy box), then report.
	for i := 0; i < 240 && w.busy(ctx); i++ {
		time.Sleep(500 * time.Millisecond)
		w.poll(ctx)
	}
	w.poll(ctx)
	w.summary(ctx)
	say("done; logs, the job store and the tracker are in %s", dir)
	return nil
}

// summary prints the loop's figures: versions published per job, and the
// p99 latency of the ridership model from Prometheus.
func (w *watcher) summary(ctx context.Context) {
	var js struct{ Jobs []job }
	if getJSONAuth(ctx, w.trainer+"/v1/jobs", w.trainerToken, &js) == nil {
		n := map[string]int{}
		for _, j := range js.Jobs {
			n[j.State]++
		}
		say("SUMMARY jobs %d: succeeded %d, rejected %d, failed %d — update success rate %d/%d (versions published / jobs started); serving %s",
			len(js.Jobs), n["succeeded"], n["rejected"], n["failed"], n["succeeded"], len(js.Jobs), strings.Join(w.versions, ", "))
	}
	var q struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	const p99 = `histogram_quantile(0.99, sum by (le) (rate(flywheel_inference_request_duration_seconds_bucket{model="ridership"}[5m])))`
	if getJSON(ctx, w.prom+"/api/v1/query?query="+url.QueryEscape(p99), &q) == nil && len(q.Data.Result) == 1 {
		if s, ok := q.Data.Result[0].Value[1].(string); ok {
			var v float64
			fmt.Sscan(s, &v)
			say("SUMMARY p99 inference request latency of ridership over the last 5 minutes: %.2f ms", v*1000)
		}
	}
}

func copyModel(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, f := range []string{modelrepo.ModelFile, modelrepo.CardFile} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func writeFiles(dir string, files map[string][]byte) error {
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// watcher prints state changes of alerts, jobs and served versions.
type watcher struct {
	prom, trainer, serve string
	trainerToken         string            // the trainer's job routes need it
	alerts               map[string]string // alert key → state
	jobs                 map[string]string // job id → state/step
	versions             []string
}

func getJSON(ctx context.Context, url string, v any) error { return getJSONAuth(ctx, url, "", v) }

// getJSONAuth is getJSON with a bearer token (none when empty).
func getJSONAuth(ctx context.Context, url, token string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (w *watcher) scraped(ctx context.Context) bool {
	var out struct {
		Data struct {
			Result []any `json:"result"`
		} `json:"data"`
	}
	return getJSON(ctx, w.prom+"/api/v1/query?query=flywheel_feedback_labels_total", &out) == nil && len(out.Data.Result) > 0
}

type job struct {
	ID, State, Step, Trigger, Reason string
	Alerts                           []string
	Deliveries                       int
	Result                           map[string]any
	Steps                            []struct {
		Name, State, Detail string
		Seconds             float64
	}
}

func (w *watcher) busy(ctx context.Context) bool {
	var out struct{ Jobs []job }
	if getJSONAuth(ctx, w.trainer+"/v1/jobs", w.trainerToken, &out) != nil {
		return false
	}
	for _, j := range out.Jobs {
		if j.State == "queued" || j.State == "running" {
			return true
		}
	}
	return false
}

func (w *watcher) poll(ctx context.Context) {
	var al struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
				Value  string            `json:"value"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if getJSON(ctx, w.prom+"/api/v1/alerts", &al) == nil {
		seen := map[string]bool{}
		for _, a := range al.Data.Alerts {
			key := a.Labels["alertname"]
			if v := a.Labels["version"]; v != "" {
				key += "{version=" + v + "}"
			}
			seen[key] = true
			if w.alerts[key] != a.State {
				w.alerts[key] = a.State
				say("ALERT   %-32s %-8s value %s", key, a.State, alertValue(a.Value))
			}
		}
		for key := range w.alerts {
			if !seen[key] {
				delete(w.alerts, key)
				say("ALERT   %-32s resolved", key)
			}
		}
	}
	var js struct{ Jobs []job }
	if getJSONAuth(ctx, w.trainer+"/v1/jobs", w.trainerToken, &js) == nil {
		sort.Slice(js.Jobs, func(i, k int) bool { return js.Jobs[i].ID < js.Jobs[k].ID })
		for _, j := range js.Jobs {
			st := j.State + "/" + j.Step
			if w.jobs[j.ID] == st {
				continue
			}
			if _, known := w.jobs[j.ID]; !known {
				say("JOB     %s queued (%s %s, %d delivery)", j.ID, j.Trigger, strings.Join(j.Alerts, ","), j.Deliveries)
			}
			w.jobs[j.ID] = st
			switch j.State {
			case "running":
				say("JOB     %s running step %s", j.ID, j.Step)
			case "succeeded", "rejected", "failed":
				var full job
				if getJSONAuth(ctx, w.trainer+"/v1/jobs/"+j.ID, w.trainerToken, &full) == nil {
					for _, s := range full.Steps {
						say("JOB     %s   %-8s %-9s %6.2fs %s", j.ID, s.Name, s.State, s.Seconds, short(s.Detail))
					}
				}
				say("JOB     %s %s %s", j.ID, strings.ToUpper(j.State), short(j.Reason))
			}
		}
	}
	var meta struct {
		Versions []string `json:"versions"`
	}
	if getJSON(ctx, w.serve+"/v2/models/ridership", &meta) == nil && strings.Join(meta.Versions, ",") != strings.Join(w.versions, ",") {
		w.versions = meta.Versions
		say("SERVE   ridership versions ready: %s", strings.Join(meta.Versions, ", "))
	}
}

// alertValue prints an alert's value (Prometheus sends "5.601182832344129e+00")
// with four significant digits.
func alertValue(s string) string {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return strconv.FormatFloat(f, 'g', 4, 64)
	}
	return short(s)
}

func short(s string) string {
	if len(s) > 160 {
		return s[:160] + "…"
	}
	return s
}
