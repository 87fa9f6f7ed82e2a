package e2e

import (
	"net/http"
	"sync"
	"testing"
	"time"

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
	const (
		round   = 5000
		clients = 64
	)
	pg := harness.StartPostgres(b, harness.PostgresOptions{})
	rows := chicago(b).Rows
	body := inferBody("", nil, []dataset.Row{rows[len(rows)-1]})
	modes := []string{"off", "sqlite", "postgres"}
	servers := map[string]*serveProc{
		"off":      startServe(b, "--predlog-db="),
		"sqlite":   startServe(b),
		"postgres": startServe(b, "--database", pg.NewDatabase(b)),
	}
	elapsed := map[string]time.Duration{}
	logged := map[string]int{}
	burst := func(mode string, n int) {
		url := servers[mode].URL + "/v2/models/ridership/infer"
		start := time.Now()
		var wg sync.WaitGroup
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := c; i < n; i += clients {
					if code, resp, err := post(url, body, ""); err != nil || code != http.StatusOK {
						b.Errorf("%s: infer: %d %v %s", mode, code, err, resp)
						return
					}
				}
			}()
		}
		wg.Wait()
		if mode != "off" {
			logged[mode] += n
			for values(scrape(b, servers[mode].URL), "flywheel_predlog_written_total", "")[""] < float64(logged[mode]) {
				time.Sleep(2 * time.Millisecond)
			}
		}
		elapsed[mode] += time.Since(start)
	}
	for _, mode := range modes { // warm-up: connections, sessions
		burst(mode, 1000)
	}
	clear(elapsed)
	cpu := func(mode string) float64 {
		return values(scrape(b, servers[mode].URL), "process_cpu_seconds_total", "")[""]
	}
	cpu0 := map[string]float64{}
	for _, m := range modes {
		cpu0[m] = cpu(m)
	}
	b.ResetTimer()
	for done := 0; done < b.N; done += round {
		n := min(round, b.N-done)
		for _, m := range modes {
			burst(m, n)
		}
	}
	b.StopTimer()
	off := float64(b.N) / elapsed["off"].Seconds()
	for _, m := range modes {
		rate := float64(b.N) / elapsed[m].Seconds()
		b.ReportMetric(rate, m+"-req/s")
		if m != "off" {
			b.ReportMetric(rate/off, m+"/off")
		}
		b.ReportMetric((cpu(m)-cpu0[m])/float64(b.N)*1e6, "cpu-µs/req-"+m)
	}
	b.ReportMetric(0, "ns/op")
	for _, m := range modes[1:] {
		if d := values(scrape(b, servers[m].URL), "flywheel_predlog_dropped_total", "")[""]; d != 0 {
			b.Errorf("%s: prediction log dropped %g rows", m, d)
		}
	}
}
