package docs

import (
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/flywheel-ml/flywheel/monitoring"
)

var promqlMetricRe = regexp.MustCompile(`flywheel_[a-z]`)

// promqlExpressions returns the PromQL expressions of a document: inline
// code spans that mention a flywheel_ metric and are not shell commands, and
// the expressions of ```promql blocks (separated by # comment lines).
func promqlExpressions(text string) []string {
	var out []string
	for _, l := range proseLines(text) {
		for _, m := range codeSpanRe.FindAllStringSubmatch(l.Text, -1) {
			span := strings.ReplaceAll(m[1], `\|`, "|")
			first, _, _ := strings.Cut(strings.TrimSpace(span), " ")
			if !promqlMetricRe.MatchString(span) || commandWords[first] {
				continue
			}
			out = append(out, span)
		}
	}
	inBlock := false
	var cur []string
	flush := func() {
		if e := strings.TrimSpace(strings.Join(cur, "\n")); e != "" {
			out = append(out, e)
		}
		cur = nil
	}
	for _, line := range strings.Split(text, "\n") {
		t := strings.TrimSpace(line)
		switch {
		case !inBlock && t == "```promql":
			inBlock = true
		case inBlock && strings.HasPrefix(t, "```"):
			flush()
			inBlock = false
		case inBlock && strings.HasPrefix(t, "#"):
			flush()
		case inBlock:
			cur = append(cur, line)
		}
	}
	return out
}

// TestPromQLInDocs parses every PromQL expression of the documents with
// Prometheus's own parser and checks that it names only metrics the
// contracts define.
func TestPromQLInDocs(t *testing.T) {
	total := 0
	for _, f := range markdownDocs(t) {
		for _, e := range promqlExpressions(readDoc(t, f)) {
			total++
			expr, err := parser.ParseExpr(e)
			if err != nil {
				t.Errorf("%s: PromQL %q does not parse: %v", f, e, err)
				continue
			}
			var unknown []string
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				if vs, ok := n.(*parser.VectorSelector); ok && !monitoring.IsMetric(vs.Name) {
					unknown = append(unknown, vs.Name)
				}
				return nil
			})
			sort.Strings(unknown)
			for _, name := range unknown {
				t.Errorf("%s: PromQL %q names metric %q, which CONTRACTS.md does not define", f, e, name)
			}
		}
	}
	if total < 10 {
		t.Errorf("found %d PromQL expressions in the documents, expected the runbook's and the specification's", total)
	}
}

func TestPromQLExpressions(t *testing.T) {
	doc := "Check `rate(flywheel_x_total[5m])` and `curl -s localhost:8090/metrics | grep flywheel_y` and `flywheel_`.\n" +
		"```promql\n# first\nsum(flywheel_a)\n  / sum(flywheel_b)\n# second\nflywheel_c\n```\n"
	got := promqlExpressions(doc)
	want := []string{"rate(flywheel_x_total[5m])", "sum(flywheel_a)\n  / sum(flywheel_b)", "flywheel_c"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("promqlExpressions = %q, want %q", got, want)
	}
	for name, ok := range map[string]bool{"flywheel_inference_request_duration_seconds_bucket": true, "flywheel_trainer_jobs_total": true, "flywheel_inference_latency": false} {
		if monitoring.IsMetric(name) != ok {
			t.Errorf("monitoring.IsMetric(%q) = %v, want %v", name, !ok, ok)
		}
	}
}
