package feedback

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/server/predlog"
)

// TestLoadPredictionsWithFeedback logs 20,000 predictions from concurrent
// clients at default settings and sends each one's label right after it over
// loopback HTTP: every label must be stored joined to its prediction and the
// drop counter must read zero.
func TestLoadPredictionsWithFeedback(t *testing.T) {
	const (
		clients = 16
		total   = 20000
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dbURL := filepath.Join(t.TempDir(), "flywheel.db")
	db, err := predlog.Open(ctx, dbURL, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	reg := prometheus.NewRegistry()
	l, err := predlog.New(predlog.Options{Config: predlog.DefaultConfig(), Store: db, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan struct{})
	go func() { l.Run(ctx); close(runDone) }()
	store, err := New(Options{DB: db, Log: l, Cards: cards, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	api, err := NewAPI(APIOptions{Store: store, Rate: -1}) // one client at full speed: no rate limit
	if err != nil {
		t.Fatal(err)
	}
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	api.Register(app)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go app.Listener(ln)
	defer app.ShutdownWithTimeout(5 * time.Second)
	url := "http://" + ln.Addr().String() + "/v1/feedback"
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}

	names := []string{"Austin", "Quincy_Wells", "Belmont", "dow", "holiday"}
	start := time.Now()
	var failures atomic.Int64
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < total; i += clients {
				id := fmt.Sprintf("load-%d", i)
				pred := float64(i % 20)
				// What serve does after an inference: record, never wait.
				l.Record(predlog.Entry{ID: id, Model: "ridership", Version: 2, Parameters: map[string]any{"n": i},
					FeatureNames: names, Features: []float64{1, 2, 3, float64(i % 7), 0}, Outputs: []float64{pred}})
				body, _ := json.Marshal(Label{ID: id, Value: f(pred + 1)})
				resp, err := client.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					failures.Add(1)
					continue
				}
				var fr FeedbackResponse
				if json.NewDecoder(resp.Body).Decode(&fr) != nil || resp.StatusCode != 200 || fr.Created != 1 {
					failures.Add(1)
				}
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d feedback requests failed", n)
	}
	var labels, joinedRows int
	harness.OpenDB(t, dbURL).QueryRow(`SELECT COUNT(*), COUNT(prediction) FROM labels`).Scan(&labels, &joinedRows)
	if labels != total || joinedRows != total {
		t.Fatalf("%d labels (%d joined to a prediction), want %d", labels, joinedRows, total)
	}
	if got := testutil.ToFloat64(store.m.labels.WithLabelValues("ridership", "2")); got != total {
		t.Fatalf("flywheel_feedback_labels_total = %g, want %d", got, total)
	}
	if got := testutil.ToFloat64(store.m.absErr.WithLabelValues("ridership", "2")); got != total {
		t.Fatalf("flywheel_feedback_absolute_error_total = %g, want %d", got, total)
	}
	cancel()
	<-runDone
	if n, _ := db.Count(context.Background()); n != total {
		t.Fatalf("%d predictions logged, want %d", n, total)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "flywheel_predlog_dropped_total" && mf.GetMetric()[0].GetCounter().GetValue() != 0 {
			t.Fatalf("dropped %g predictions", mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	t.Logf("%d predictions + labels from %d clients in %v (%.0f labels/s)", total, clients, elapsed.Round(time.Millisecond),
		float64(total)/elapsed.Seconds())
}
