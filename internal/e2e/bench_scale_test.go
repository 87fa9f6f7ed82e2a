package e2e

import (
	"testing"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/train/dataset"
)

// BenchmarkScalePredictionLog is `make bench-scale`: single-row inference at
// c=64 through three real `flywheel serve` processes with every feature on
// (drift, feedback, store metrics) — the prediction log off, on SQLite, and
// on a real PostgreSQL 15 with its durable defaults (fsync, synchronous
// commit) — in alternating rounds of 5,000 requests so that load from
// elsewhere on the machine hits all alike. A logging round lasts until its
// rows are committed, so its req/s is also the log's sustained rows/s. It
// reports req/s per backend, each one's ratio to "off" (the inference cost
// of the log) and CPU µs per request of the serve process:
//
//	go test -run '^$' -bench ScalePredictionLog -benchtime 40000x ./internal/e2e/
func BenchmarkScalePredictionLog(b *testing.B) {
	pg := harness.StartPostgres(b, harness.PostgresOptions{})
	rows := chicago(b).Rows
	body := inferBody("", nil, []dataset.Row{rows[len(rows)-1]})
	servers := map[string]*serveProc{
		"off":      startServe(b, "--predlog-db="),
		"sqlite":   startServe(b),
		"postgres": startServe(b, "--database", pg.NewDatabase(b)),
	}
	predlogBench(b, body, servers, []string{"off", "sqlite", "postgres"}, 64, 1000)
}
