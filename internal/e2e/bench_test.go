package e2e

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/train/dataset"
)

// BenchmarkServePredictionLog measures single-row OIP inference through two
// real `flywheel serve` processes over loopback, one with the prediction log
// off (--predlog-db=) and one with it on (defaults; drift is on in both).
// b.N requests go to each, in alternating rounds of 5,000 from 8 concurrent
// clients so that load from elsewhere on the machine hits both alike; an
// "on" round lasts until its rows are committed (which adds up to one
// flush interval, 100ms, per round). It reports the throughput of each, their
// ratio on/off, and the CPU time each serve process spent per request
// (process_cpu_seconds_total), which the alternation cannot blur:
//
//	go test -run '^$' -bench ServePredictionLog -benchtime 20000x ./internal/e2e/
func BenchmarkServePredictionLog(b *testing.B) {
	rows := chicago(b).Rows
	body := inferBody("", nil, []dataset.Row{rows[len(rows)-1]})
	servers := map[string]*serveProc{"off": startServe(b, "--predlog-db="), "on": startServe(b)}
	predlogBench(b, body, servers, []string{"off", "on"}, 8, 500)
}

// predlogBench sends b.N single-row inference requests (body) to each of
// servers, in alternating rounds of 5,000 from clients concurrent clients,
// modes[0] ("off") first; a round of any other mode lasts until its rows are
// committed to the prediction log. Before timing, each mode gets warmup
// requests (connections, sessions). It reports each mode's req/s, its
// ratio to "off" and the serve process's CPU µs per request, and fails if a
// log dropped rows.
func predlogBench(b *testing.B, body []byte, servers map[string]*serveProc, modes []string, clients, warmup int) {
	const round = 5000
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
			// Sustained throughput includes writing the log: the round ends
			// once every row is committed, so the writer's work does not
			// spill into the next "off" round.
			logged[mode] += n
			for values(scrape(b, servers[mode].URL), "flywheel_predlog_written_total", "")[""] < float64(logged[mode]) {
				time.Sleep(2 * time.Millisecond)
			}
		}
		elapsed[mode] += time.Since(start)
	}
	for _, mode := range modes { // warm-up: connections, sessions
		burst(mode, warmup)
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
