package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/harness"
)

// checkDashboardPanels evaluates every query of every committed Grafana
// panel in the Prometheus at promURL (Grafana's variables replaced as in
// grafanaVars) and fails for each query that returns no series: after the
// closed loop's traffic — the demo's replay, labels, a retrain from an alert
// and a rejected manual job — every panel must show something.
func checkDashboardPanels(t *testing.T, promURL string) {
	t.Helper()
	type query struct{ panel, expr string }
	var queries []query
	eachDashboardQuery(t, func(title, _, expr string) { queries = append(queries, query{title, expr}) })
	panels := map[string]bool{}
	empty := 0
	for _, q := range queries {
		panels[q.panel] = true
		// A query over a window needs two scrapes of the newest samples:
		// retry for a few seconds before calling a panel empty.
		var n int
		var qerr error
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(250 * time.Millisecond) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s, err := harness.Query(ctx, promURL, q.expr)
			cancel()
			n, qerr = len(s), err
			if (err == nil && n > 0) || time.Now().After(deadline) {
				break
			}
		}
		if qerr != nil || n == 0 {
			empty++
			t.Errorf("dashboard panel %q: %s returns %d series (%v)", q.panel, q.expr, n, qerr)
		}
	}
	t.Logf("dashboard: %d panels, %d queries evaluated in Prometheus, %d without series", len(panels), len(queries), empty)
	if len(queries) < 10 {
		t.Errorf("only %d dashboard queries found", len(queries))
	}
}
