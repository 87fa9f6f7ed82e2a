package monitoring

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

// grafanaVars replaces Grafana's template variables by values PromQL parses.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__interval", "1m",
	"$__range", "1h",
	"$model", "ridership",
)

type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title   string   `json:"title"`
	Type    string   `json:"type"`
	Panels  []panel  `json:"panels"`
	Targets []target `json:"targets"`
}

type target struct {
	RefID string `json:"refId"`
	Expr  string `json:"expr"`
}

func walkPanels(ps []panel, fn func(panel)) {
	for _, p := range ps {
		fn(p)
		walkPanels(p.Panels, fn)
	}
}

// metricNames returns every metric name an expression selects.
func metricNames(expr parser.Expr) []string {
	var names []string
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			if name == "" {
				for _, m := range vs.LabelMatchers {
					if m.Name == "__name__" {
						name = m.Value
					}
				}
			}
			names = append(names, name)
		}
		return nil
	})
	return names
}

func TestDashboardExpressions(t *testing.T) {
	files, err := filepath.Glob("grafana/dashboards/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards found: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var d dashboard
			if err := json.Unmarshal(b, &d); err != nil {
				t.Fatalf("dashboard JSON: %v", err)
			}
			if d.UID == "" || d.Title == "" {
				t.Errorf("dashboard needs uid and title, got %q %q", d.UID, d.Title)
			}
			used := map[string]bool{}
			n := 0
			walkPanels(d.Panels, func(p panel) {
				if p.Type != "row" && p.Type != "text" && len(p.Targets) == 0 {
					t.Errorf("panel %q has no query", p.Title)
				}
				for _, tg := range p.Targets {
					n++
					expr, err := parser.ParseExpr(grafanaVars.Replace(tg.Expr))
					if err != nil {
						t.Errorf("panel %q target %s: %q does not parse: %v", p.Title, tg.RefID, tg.Expr, err)
						continue
					}
					for _, name := range metricNames(expr) {
						used[name] = true
						if !IsMetric(name) {
							t.Errorf("panel %q target %s uses %q, not a metric of CONTRACTS.md", p.Title, tg.RefID, name)
						}
					}
				}
			})
			var names []string
			for name := range used {
				names = append(names, name)
			}
			sort.Strings(names)
			t.Logf("%d expressions over %d metrics: %s", n, len(names), strings.Join(names, " "))
			// The panels: traffic, latency, errors, batch size, drift,
			// live MAE, model versions, retrain jobs.
			for _, want := range []string{
				"flywheel_inference_requests_total", "flywheel_inference_request_duration_seconds_bucket",
				"flywheel_http_requests_total", "flywheel_inference_executions_total",
				"flywheel_feature_drift_psi", "flywheel_feedback_absolute_error_total",
				"flywheel_model_version_ready", "flywheel_trainer_jobs_total",
			} {
				if !used[want] {
					t.Errorf("dashboard does not chart %s", want)
				}
			}
		})
	}
}

// TestKnownMetric guards the checker itself.
func TestKnownMetric(t *testing.T) {
	for name, want := range map[string]bool{
		"flywheel_inference_request_duration_seconds_bucket": true,
		"flywheel_trainer_step_duration_seconds_count":       true,
		"flywheel_feature_drift_psi":                         true,
		"flywheel_feature_drift_psi_bucket":                  false,
		"flywheel_drift_psi":                                 false,
		"":                                                   false,
	} {
		if got := IsMetric(name); got != want {
			t.Errorf("IsMetric(%q) = %v, want %v", name, got, want)
		}
	}
}
