package e2e

import (
	"net/http"
	"testing"

	"github.com/flywheel-ml/flywheel/train/dataset"
)

// BenchmarkServePredictionLog measures single-row OIP inference through a
// real `flywheel serve` over loopback with the prediction log off
// (--predlog-db=) and on (defaults; drift is on in both). Compare the two
// ns/op of one run:
//
//	go test -run '^$' -bench ServePredictionLog -benchtime 20000x ./internal/e2e/
func BenchmarkServePredictionLog(b *testing.B) {
	rows := chicago(b).Rows
	body := inferBody("", nil, []dataset.Row{rows[len(rows)-1]})
	for _, c := range []struct {
		name string
		args []string
	}{{"off", []string{"--predlog-db="}}, {"on", nil}} {
		b.Run(c.name, func(b *testing.B) {
			serve := startServe(b, c.args...)
			url := serve.URL + "/v2/models/ridership/infer"
			for range 200 { // warm-up: connections, session
				post(url, body, "")
			}
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if code, resp, err := post(url, body, ""); err != nil || code != http.StatusOK {
						b.Errorf("infer: %d %v %s", code, err, resp)
						return
					}
				}
			})
			b.StopTimer()
			mfs := scrape(b, serve.URL)
			if d := values(mfs, "flywheel_predlog_dropped_total", "")[""]; d != 0 {
				b.Logf("dropped %g", d)
			}
		})
	}
}
