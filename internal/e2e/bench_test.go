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
	const (
		round   = 5000
		clients = 8
	)
	rows := chicago(b).Rows
	body := inferBody("", nil, []dataset.Row{rows[len(rows)-1]})
	servers := map[string]*serveProc{"off": startServe(b, "--predlog-db="), "on": startServe(b)}
	elapsed := map[string]time.Duration{}
	logged := 0
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
		if mode == "on" {
			// Sustained throughput includes writing the log: the round ends
			// once every row is committed, so the writer's work does not
			// spill into the next "off" round.
			logged += n
			for values(scrape(b, servers["on"].URL), "flywheel_predlog_written_total", "")[""] < float64(logged) {
				time.Sleep(2 * time.Millisecond)
			}
		}
		elapsed[mode] += time.Since(start)
	}
	for _, mode := range []string{"off", "on"} { // warm-up: connections, sessions
		burst(mode, 500)
	}
	clear(elapsed)
	cpu := func(mode string) float64 {
		return values(scrape(b, servers[mode].URL), "process_cpu_seconds_total", "")[""]
	}
	cpu0 := map[string]float64{"off": cpu("off"), "on": cpu("on")}
	b.ResetTimer()
	for done := 0; done < b.N; done += round {
		n := min(round, b.N-done)
		burst("off", n)
		burst("on", n)
	}
	b.StopTimer()
	off, on := float64(b.N)/elapsed["off"].Seconds(), float64(b.N)/elapsed["on"].Seconds()
	b.ReportMetric(off, "off-req/s")
	b.ReportMetric(on, "on-req/s")
	b.ReportMetric(on/off, "on/off")
	for _, mode := range []string{"off", "on"} {
		b.ReportMetric((cpu(mode)-cpu0[mode])/float64(b.N)*1e6, "cpu-µs/req-"+mode)
	}
	b.ReportMetric(0, "ns/op")
	if d := values(scrape(b, servers["on"].URL), "flywheel_predlog_dropped_total", "")[""]; d != 0 {
		b.Errorf("prediction log dropped %g rows", d)
	}
}
