package docs

import (
	"strings"
	"testing"

	"github.com/flywheel-ml/flywheel/monitoring"
	"gopkg.in/yaml.v3"
)

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type alertLink struct {
	Alert, URL string
}

// runbookLinks returns every alerting rule of a Prometheus rule file with
// its runbook_url annotation ("" when absent).
func runbookLinks(data []byte) ([]alertLink, error) {
	var rf ruleFile
	if err := yaml.Unmarshal(data, &rf); err != nil {
		return nil, err
	}
	var out []alertLink
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			out = append(out, alertLink{r.Alert, r.Annotations["runbook_url"]})
		}
	}
	return out, nil
}

// checkRunbookLink reports what is wrong with one alert's runbook link, or
// "" when it points at runbook.md#<lowercase alert name> and that anchor
// exists.
func checkRunbookLink(l alertLink, runbookAnchors map[string]bool) string {
	if l.URL == "" {
		return "has no runbook_url annotation"
	}
	i := strings.LastIndex(l.URL, "#")
	if i < 0 || !strings.HasSuffix(l.URL[:i], "docs/runbook.md") {
		return "runbook_url " + l.URL + " does not point into docs/runbook.md#…"
	}
	anchor := l.URL[i+1:]
	if want := strings.ToLower(l.Alert); anchor != want {
		return "runbook_url anchor #" + anchor + " is not #" + want
	}
	if !runbookAnchors[anchor] {
		return "runbook.md has no section with anchor #" + anchor
	}
	return ""
}

// TestRunbookCoversAlerts: every alert of monitoring/alerts.yml (which
// monitoring's tests hold to the alerts CONTRACTS.md names) has a section.
func TestRunbookCoversAlerts(t *testing.T) {
	names := monitoring.AlertNames()
	if len(names) == 0 {
		t.Fatal("monitoring/alerts.yml defines no alerts")
	}
	a := anchors(readDoc(t, "runbook.md"))
	for _, name := range names {
		if !a[strings.ToLower(name)] {
			t.Errorf("runbook.md has no section \"## %s\" (anchor #%s)", name, strings.ToLower(name))
		}
	}
}

func TestAlertsLinkToRunbook(t *testing.T) {
	links, err := runbookLinks(monitoring.Alerts)
	if err != nil {
		t.Fatalf("parsing monitoring/alerts.yml: %v", err)
	}
	if len(links) == 0 {
		t.Fatal("monitoring/alerts.yml has no alerting rules")
	}
	a := anchors(readDoc(t, "runbook.md"))
	for _, l := range links {
		if msg := checkRunbookLink(l, a); msg != "" {
			t.Errorf("alert %s: %s", l.Alert, msg)
		}
	}
}

func TestCheckRunbookLink(t *testing.T) {
	a := map[string]bool{"featuredrift": true, "nomodelready": true}
	tests := []struct {
		link alertLink
		ok   bool
	}{
		{alertLink{"FeatureDrift", "https://github.com/flywheel-ml/flywheel/blob/main/docs/runbook.md#featuredrift"}, true},
		{alertLink{"FeatureDrift", "docs/runbook.md#featuredrift"}, true},
		{alertLink{"NoModelReady", "docs/runbook.md#NoModelReady"}, false},
		{alertLink{"NoModelReady", "docs/runbook.md#featuredrift"}, false},
		{alertLink{"ModelErrorHigh", "docs/runbook.md#modelerrorhigh"}, false},
		{alertLink{"FeatureDrift", "docs/other.md#featuredrift"}, false},
		{alertLink{"FeatureDrift", "docs/runbook.md"}, false},
		{alertLink{"FeatureDrift", ""}, false},
	}
	for _, tt := range tests {
		msg := checkRunbookLink(tt.link, a)
		if (msg == "") != tt.ok {
			t.Errorf("checkRunbookLink(%+v) = %q, want ok=%v", tt.link, msg, tt.ok)
		}
	}
}

func TestRunbookLinksParsesRuleFiles(t *testing.T) {
	rules := `groups:
- name: flywheel
  rules:
  - record: job:x:rate5m
    expr: rate(x[5m])
  - alert: FeatureDrift
    expr: max(flywheel_feature_drift_psi) > 0.2
    for: 10m
    labels: {severity: warning, action: retrain}
    annotations:
      summary: drift
      runbook_url: docs/runbook.md#featuredrift
  - alert: NoModelReady
    expr: sum(flywheel_model_version_ready) == 0
`
	links, err := runbookLinks([]byte(rules))
	if err != nil {
		t.Fatal(err)
	}
	want := []alertLink{{"FeatureDrift", "docs/runbook.md#featuredrift"}, {"NoModelReady", ""}}
	if len(links) != len(want) {
		t.Fatalf("got %v, want %v", links, want)
	}
	for i := range want {
		if links[i] != want[i] {
			t.Errorf("link %d = %v, want %v", i, links[i], want[i])
		}
	}
	if _, err := runbookLinks([]byte("groups: [")); err == nil {
		t.Error("malformed YAML: want an error")
	}
}
