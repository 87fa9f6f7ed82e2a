// Package monitoring holds Flywheel's Prometheus, Alertmanager and Grafana
// configuration (the YAML and JSON files next to this one) and helpers for
// tests that run real Prometheus and Alertmanager processes with them.
package monitoring

import (
	"bufio"
	"bytes"
	_ "embed"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// Alerts is monitoring/alerts.yml as committed.
//
//go:embed alerts.yml
var Alerts []byte

// AlertNames lists the alerts of alerts.yml, in file order.
func AlertNames() []string {
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(Alerts))
	for sc.Scan() {
		if m := alertLine.FindStringSubmatch(sc.Text()); m != nil {
			names = append(names, m[1])
		}
	}
	return names
}

var (
	alertLine = regexp.MustCompile(`^\s*- alert:\s*(\S+)\s*$`)
	forLine   = regexp.MustCompile(`^(\s*)for:\s*(\S+)\s*$`)
)

// RenderOptions changes alert timings for tests.
type RenderOptions struct {
	// For replaces the `for:` duration of every alert when non-zero.
	For time.Duration
	// ForAlert replaces the `for:` duration of the named alerts; it wins over For.
	ForAlert map[string]time.Duration
}

// RenderAlerts returns a copy of src (alerts.yml) with the `for:` durations
// replaced as opts says. It fails if an alert named in opts.ForAlert does not
// exist or has no `for:` line, so tests notice when alerts.yml changes shape.
func RenderAlerts(src []byte, opts RenderOptions) ([]byte, error) {
	var out bytes.Buffer
	seen := map[string]bool{}
	current := ""
	sc := bufio.NewScanner(bytes.NewReader(src))
	for sc.Scan() {
		line := sc.Text()
		if m := alertLine.FindStringSubmatch(line); m != nil {
			current = m[1]
		} else if m := forLine.FindStringSubmatch(line); m != nil && current != "" {
			d, ok := opts.ForAlert[current]
			if !ok {
				d = opts.For
			}
			if d > 0 || ok {
				line = m[1] + "for: " + model.Duration(d).String()
			}
			seen[current] = true
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading alert rules: %w", err)
	}
	var missing []string
	for name := range opts.ForAlert {
		if !seen[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("alerts without a for: line or not defined: %s", strings.Join(missing, ", "))
	}
	return out.Bytes(), nil
}

// Alertmanager is monitoring/alertmanager.yml as committed.
//
//go:embed alertmanager.yml
var Alertmanager []byte

// TrainerWebhook is the trainer receiver's URL in alertmanager.yml.
const TrainerWebhook = "http://trainer:8090/v1/alerts"

// AlertmanagerOptions changes alertmanager.yml for tests.
type AlertmanagerOptions struct {
	// TrainerURL replaces the trainer's webhook URL when set.
	TrainerURL string
	// GroupWait, GroupInterval and RepeatInterval replace every route's
	// timers when non-zero.
	GroupWait, GroupInterval, RepeatInterval time.Duration
}

// RenderAlertmanager returns a copy of src (alertmanager.yml) changed as
// opts says. The trainer token stays at secrets/trainer-token relative to
// wherever the copy is written.
func RenderAlertmanager(src []byte, opts AlertmanagerOptions) ([]byte, error) {
	out := src
	if opts.TrainerURL != "" {
		if !bytes.Contains(out, []byte(TrainerWebhook)) {
			return nil, fmt.Errorf("alertmanager.yml has no webhook %s", TrainerWebhook)
		}
		out = bytes.ReplaceAll(out, []byte(TrainerWebhook), []byte(opts.TrainerURL))
	}
	out = setDuration(out, "group_wait", opts.GroupWait)
	out = setDuration(out, "group_interval", opts.GroupInterval)
	out = setDuration(out, "repeat_interval", opts.RepeatInterval)
	return out, nil
}

// Prometheus is monitoring/prometheus.yml as committed.
//
//go:embed prometheus.yml
var Prometheus []byte

// PrometheusOptions changes prometheus.yml for tests: each non-empty field
// replaces the committed value.
type PrometheusOptions struct {
	Serve, Trainer, Alertmanager string // host:port of the targets
	// ScrapeInterval and EvaluationInterval replace the global intervals.
	ScrapeInterval, EvaluationInterval time.Duration
}

// RenderPrometheus returns a copy of src (prometheus.yml) changed as opts
// says; rule files stay relative to wherever the copy is written.
func RenderPrometheus(src []byte, opts PrometheusOptions) ([]byte, error) {
	out := src
	for _, r := range []struct{ from, to string }{
		{`"serve:8080"`, opts.Serve}, {`"trainer:8090"`, opts.Trainer}, {`"alertmanager:9093"`, opts.Alertmanager},
	} {
		if r.to == "" {
			continue
		}
		if !bytes.Contains(out, []byte(r.from)) {
			return nil, fmt.Errorf("prometheus.yml has no target %s", r.from)
		}
		out = bytes.ReplaceAll(out, []byte(r.from), []byte(fmt.Sprintf("%q", r.to)))
	}
	out = setDuration(out, "scrape_interval", opts.ScrapeInterval)
	out = setDuration(out, "evaluation_interval", opts.EvaluationInterval)
	return out, nil
}

// setDuration sets every `key: …` line of the YAML src to d, keeping its
// indentation; d ≤ 0 leaves src as it is.
func setDuration(src []byte, key string, d time.Duration) []byte {
	if d <= 0 {
		return src
	}
	line := regexp.MustCompile(`(?m)^(\s*)` + regexp.QuoteMeta(key) + `:\s*\S+\s*$`)
	return line.ReplaceAll(src, []byte("${1}"+key+": "+model.Duration(d).String()))
}
