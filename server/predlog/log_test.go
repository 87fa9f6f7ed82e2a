package predlog

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-ml/flywheel/internal/configtest"
	"github.com/flywheel-ml/flywheel/internal/database"
	"github.com/flywheel-ml/flywheel/internal/harness"
)

// TestStoreContract runs the prediction log's one contract suite against
// both backends: SQLite files and databases on a real PostgreSQL server.
func TestStoreContract(t *testing.T) {
	harness.RunContract(t, storeContract{})
}

// storeContract is the contract suite of the prediction log's store: each
// exported method Test<Name> is a case, run against every backend.
type storeContract struct{}

func openStore(t *testing.T) *Store {
	t.Helper()
	return openURL(t, filepath.Join(t.TempDir(), "flywheel.db"))
}

func openURL(t *testing.T, url string) *Store {
	t.Helper()
	s, err := Open(context.Background(), url, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newLog(t *testing.T, s *Store, cfg Config, opts Options) (*Log, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	opts.Config, opts.Store, opts.Registerer = cfg, s, reg
	l, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return l, reg
}

// start runs l until the test ends and returns a stop function that waits
// for Run to return.
func start(t *testing.T, l *Log) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func TestOpenMigrates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flywheel.db")
	ctx := context.Background()
	for i := range 2 { // the second open finds the schema in place
		s, err := Open(ctx, path, time.Second)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		v, err := s.SchemaVersion(ctx)
		if err != nil || v != len(migrations) {
			t.Fatalf("schema version %d (%v), want %d", v, err, len(migrations))
		}
		var mode string
		if err := s.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
			t.Fatalf("journal_mode %q (%v), want wal", mode, err)
		}
		var busy int
		if err := s.db.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&busy); err != nil || busy != 1000 {
			t.Fatalf("busy_timeout %d (%v), want 1000", busy, err)
		}
		if i == 1 {
			if _, err := s.db.ExecContext(ctx, `INSERT INTO schema_migrations VALUES (99, 'future')`); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
	}
	if _, err := Open(ctx, path, time.Second); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("opening a newer schema: %v, want an error", err)
	}
}

func (storeContract) TestRecordRoundTrip(t *testing.T, newURL func(testing.TB) string) {
	s := openURL(t, newURL(t))
	l, reg := newLog(t, s, DefaultConfig(), Options{})
	start(t, l)
	at := time.Date(2026, 11, 22, 8, 0, 0, 123456000, time.UTC)
	entries := []Entry{
		{ID: "replay-2016-08-01", Time: at, Model: "ridership", Version: 2,
			Parameters: map[string]any{"date": "2016-08-01"}, FeatureNames: []string{"Austin", "dow"},
			Features: []float64{1.5, 0}, Outputs: []float64{15.25}},
		{ID: "anon", Model: "m", Version: 1, Features: []float64{1, 2}, Outputs: []float64{0, 0.2, 0.8}},
		{ID: "no-output", Model: "m", Version: 1},
	}
	for _, e := range entries {
		if !l.Record(e) {
			t.Fatalf("Record(%s) not queued", e.ID)
		}
	}
	ctx := context.Background()
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := s.Get(ctx, "replay-2016-08-01")
	if err != nil {
		t.Fatal(err)
	}
	if r.Model != "ridership" || r.Version != 2 || !r.PredictedAt.Equal(at) || r.Parameters["date"] != "2016-08-01" ||
		r.Features["Austin"] != 1.5 || r.Features["dow"] != 0 || r.Prediction == nil || *r.Prediction != 15.25 {
		t.Fatalf("round trip: %+v", r)
	}
	r, err = s.Get(ctx, "anon")
	if err != nil || r.Features["x0"] != 1 || r.Features["x1"] != 2 || len(r.Outputs) != 3 || *r.Prediction != 0 {
		t.Fatalf("unnamed features: %+v %v", r, err)
	}
	if r.PredictedAt.IsZero() {
		t.Error("Record did not stamp the time")
	}
	l.Record(Entry{ID: "fp32", Model: "m", Version: 1, FeatureNames: []string{"a", "b\"q"},
		Features: []float64{float64(float32(1.37)), math.NaN()}, Outputs: []float64{0.1}})
	l.Flush(ctx)
	if r, err := s.Get(ctx, "fp32"); err != nil || r.Features["a"] != float64(float32(1.37)) || r.Features[`b"q`] != 0 || r.Outputs[0] != 0.1 {
		t.Errorf("widened FP32 and NaN: %+v %v", r, err)
	}
	if r, err := s.Get(ctx, "no-output"); err != nil || r.Prediction != nil {
		t.Fatalf("no outputs: %+v %v", r, err)
	}
	if _, err := s.Get(ctx, "missing"); err != ErrNotFound {
		t.Fatalf("Get(missing) = %v, want ErrNotFound", err)
	}
	// The same id again: the latest prediction wins.
	l.Record(Entry{ID: "anon", Model: "m", Version: 3, Outputs: []float64{7}})
	l.Flush(ctx)
	if r, _ := s.Get(ctx, "anon"); r.Version != 3 || *r.Prediction != 7 {
		t.Fatalf("re-logged id: %+v", r)
	}
	if got := testutil.ToFloat64(l.written); got != 5 {
		t.Errorf("written = %g, want 5", got)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}

func (storeContract) TestRecordNeverBlocksAndCountsDrops(t *testing.T, newURL func(testing.TB) string) {
	s := openURL(t, newURL(t))
	cfg := DefaultConfig()
	cfg.QueueSize = 10
	l, reg := newLog(t, s, cfg, Options{})
	// Nothing drains the queue yet: a blocking Record would never return,
	// so wait for the calls, not for a time budget.
	queued := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			if l.Record(Entry{ID: fmt.Sprint(i), Model: "m", Version: 1}) {
				queued++
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Record blocked on a full queue")
	}
	if queued != 10 {
		t.Fatalf("queued %d, want 10", queued)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP flywheel_predlog_dropped_total Predictions not logged because the prediction log queue was full.
# TYPE flywheel_predlog_dropped_total counter
flywheel_predlog_dropped_total 990
# HELP flywheel_predlog_queue_length Predictions waiting in the prediction log queue.
# TYPE flywheel_predlog_queue_length gauge
flywheel_predlog_queue_length 10
`), "flywheel_predlog_dropped_total", "flywheel_predlog_queue_length"); err != nil {
		t.Fatal(err)
	}
	// Shutdown drains the queue.
	stop := start(t, l)
	stop()
	if n, _ := s.Count(context.Background()); n != 10 {
		t.Fatalf("%d rows after the shutdown drain, want 10", n)
	}
}

func (storeContract) TestShutdownDrainsEverything(t *testing.T, newURL func(testing.TB) string) {
	s := openURL(t, newURL(t))
	cfg := DefaultConfig()
	cfg.BatchSize = 64
	cfg.FlushInterval = time.Hour // only size and shutdown trigger writes
	l, _ := newLog(t, s, cfg, Options{})
	stop := start(t, l)
	const n = 5000
	for i := range n {
		for !l.Record(Entry{ID: fmt.Sprint(i), Model: "m", Version: 1, Features: []float64{float64(i)}, Outputs: []float64{1}}) {
			time.Sleep(time.Millisecond)
		}
	}
	stop()
	if got, _ := s.Count(context.Background()); got != n {
		t.Fatalf("%d rows after shutdown, want %d", got, n)
	}
}

func (storeContract) TestSampling(t *testing.T, newURL func(testing.TB) string) {
	s := openURL(t, newURL(t))
	cfg := DefaultConfig()
	cfg.SampleRate = 0.25
	i := 0
	seq := []float64{0.1, 0.3, 0.6, 0.9} // one in four below 0.25
	l, _ := newLog(t, s, cfg, Options{Sample: func() float64 { i++; return seq[i%4] }})
	start(t, l)
	logged := 0
	for k := range 400 {
		if l.Record(Entry{ID: fmt.Sprint(k), Model: "m", Version: 1}) {
			logged++
		}
	}
	l.Flush(context.Background())
	n, _ := s.Count(context.Background())
	if logged != 100 || n != 100 {
		t.Fatalf("logged %d, stored %d, want 100 of 400 at rate 0.25", logged, n)
	}
	if got := testutil.ToFloat64(l.dropped); got != 0 {
		t.Fatalf("sampled-out entries counted as dropped: %g", got)
	}
}

func (storeContract) TestRetention(t *testing.T, newURL func(testing.TB) string) {
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		maxAge  time.Duration
		maxRows int64
		want    []string // ids kept
	}{
		{"keep all", 0, 0, []string{"0", "1", "2", "3", "4"}},
		{"max rows", 0, 2, []string{"3", "4"}},
		{"max age", 60 * time.Hour, 0, []string{"3", "4"}},
		{"both", 72 * time.Hour, 1, []string{"4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openURL(t, newURL(t))
			cfg := DefaultConfig()
			cfg.MaxAge, cfg.MaxRows = tt.maxAge, tt.maxRows
			cfg.RetentionInterval = 10 * time.Millisecond
			now := base.Add(5 * 24 * time.Hour) // day i is logged at base + i days; now is day 5
			ctx := context.Background()
			var batch []Entry
			for i := range 5 {
				batch = append(batch, Entry{ID: fmt.Sprint(i), Time: base.Add(time.Duration(i) * 24 * time.Hour), Model: "m", Version: 1})
			}
			if err := s.insert(ctx, batch); err != nil {
				t.Fatal(err)
			}
			l, _ := newLog(t, s, cfg, Options{Now: func() time.Time { return now }})
			stop := start(t, l)
			var kept []string
			// Passes run every 10ms; a PostgreSQL connection takes longer
			// to set up than a SQLite file, so wait (bounded) for the set.
			for deadline := time.Now().Add(5 * time.Second); ; {
				time.Sleep(50 * time.Millisecond)
				kept = kept[:0]
				for i := range 5 {
					if _, err := s.Get(ctx, fmt.Sprint(i)); err == nil {
						kept = append(kept, fmt.Sprint(i))
					}
				}
				if strings.Join(kept, ",") == strings.Join(tt.want, ",") || time.Now().After(deadline) {
					break
				}
			}
			stop()
			if strings.Join(kept, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("kept %v, want %v", kept, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	configtest.Check(t, DefaultConfig, Config.Validate, []configtest.Case[Config]{
		{Name: "default", Edit: func(*Config) {}},
		{Name: "queue", Edit: func(c *Config) { c.QueueSize = 0 }, Want: "queue_size"},
		{Name: "batch", Edit: func(c *Config) { c.BatchSize = -1 }, Want: "batch_size"},
		{Name: "flush", Edit: func(c *Config) { c.FlushInterval = 0 }, Want: "flush_interval"},
		{Name: "sample zero", Edit: func(c *Config) { c.SampleRate = 0 }, Want: "sample_rate"},
		{Name: "sample above one", Edit: func(c *Config) { c.SampleRate = 1.5 }, Want: "sample_rate"},
		{Name: "max age", Edit: func(c *Config) { c.MaxAge = -time.Second }, Want: "max_age"},
		{Name: "max rows", Edit: func(c *Config) { c.MaxRows = -1 }, Want: "max_rows"},
		{Name: "label max age", Edit: func(c *Config) { c.LabelMaxAge = -time.Second }, Want: "label_max_age must not be negative, got -1s"},
		{Name: "retention", Edit: func(c *Config) { c.RetentionInterval = 0 }, Want: "retention_interval"},
		{Name: "write timeout", Edit: func(c *Config) { c.WriteTimeout = 0 }, Want: "write_timeout"},
	})
}

func (storeContract) TestWriteGroupCommitIsolatesFailures(t *testing.T, newURL func(testing.TB) string) {
	s := openURL(t, newURL(t))
	ctx := context.Background()
	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.write(ctx, func(tx *database.Tx) error {
				if _, err := tx.ExecContext(ctx, `INSERT INTO predictions (id, predicted_at, model, version) VALUES (?, 0, 'm', 1)`, fmt.Sprint(i)); err != nil {
					return err
				}
				if i%10 == 3 {
					return fmt.Errorf("fn %d fails after writing", i)
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		_, gerr := s.Get(ctx, fmt.Sprint(i))
		if i%10 == 3 {
			if err == nil || gerr != ErrNotFound {
				t.Errorf("failing write %d: err %v, row lookup %v (want rolled back)", i, err, gerr)
			}
		} else if err != nil || gerr != nil {
			t.Errorf("write %d: err %v, row lookup %v", i, err, gerr)
		}
	}
	// A cancelled caller is not written.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.write(cctx, func(tx *database.Tx) error { return nil }); err == nil {
		t.Error("Write with a cancelled context succeeded")
	}
}

func (storeContract) TestRecordRows(t *testing.T, newURL func(testing.TB) string) {
	s := openURL(t, newURL(t))
	l, _ := newLog(t, s, DefaultConfig(), Options{})
	start(t, l)
	ctx := context.Background()
	names := []string{"a", "b"}
	if n := l.RecordRows(Entry{ID: "req", Model: "m", Version: 1, FeatureNames: names,
		Features: []float64{1, 2, 3, 4, 5, 6}, Outputs: []float64{10, 20, 30}}, 3); n != 3 {
		t.Fatalf("queued %d rows, want 3", n)
	}
	if n := l.RecordRows(Entry{ID: "single", Model: "m", Version: 1, FeatureNames: names,
		Features: []float64{7, 8}, Outputs: []float64{70}}, 1); n != 1 {
		t.Fatalf("queued %d rows, want 1", n)
	}
	l.Flush(ctx)
	for id, want := range map[string][3]float64{"req/0": {1, 2, 10}, "req/1": {3, 4, 20}, "req/2": {5, 6, 30}, "single": {7, 8, 70}} {
		r, err := s.Get(ctx, id)
		if err != nil || r.Features["a"] != want[0] || r.Features["b"] != want[1] || *r.Prediction != want[2] {
			t.Errorf("%s: %+v %v, want %v", id, r, err, want)
		}
	}
}

// TestPruneInChunks: retention deletes in bounded transactions and keeps
// exactly the newest rows, ties on the timestamp broken by insertion order.
func (storeContract) TestPruneInChunks(t *testing.T, newURL func(testing.TB) string) {
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		maxAge  time.Duration
		maxRows int64
		chunk   int
		want    string // ids kept
		deleted int64
	}{
		{"rows, chunk smaller than the excess", 0, 3, 2, "8,9,10", 8},
		{"rows, one chunk", 0, 3, 100, "8,9,10", 8},
		{"rows, nothing to do", 0, 20, 2, "0,1,2,3,4,5,6,7,8,9,10", 0},
		{"age, chunk of one", 3 * time.Hour, 0, 1, "6,7,8,9,10", 6},
		{"age then rows", 3 * time.Hour, 2, 4, "9,10", 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openURL(t, newURL(t))
			ctx := context.Background()
			var batch []Entry
			for i := range 11 {
				// two rows per hour: ids 2k and 2k+1 share a timestamp
				batch = append(batch, Entry{ID: fmt.Sprint(i), Time: base.Add(time.Duration(i/2) * time.Hour), Model: "m", Version: 1})
			}
			if err := s.insert(ctx, batch); err != nil {
				t.Fatal(err)
			}
			now := base.Add(6 * time.Hour)
			n, err := s.prune(ctx, now, tt.maxAge, tt.maxRows, tt.chunk)
			if err != nil {
				t.Fatal(err)
			}
			var kept []string
			for i := range 11 {
				if _, err := s.Get(ctx, fmt.Sprint(i)); err == nil {
					kept = append(kept, fmt.Sprint(i))
				}
			}
			if got := strings.Join(kept, ","); got != tt.want || n != tt.deleted {
				t.Fatalf("kept %s (deleted %d), want %s (deleted %d)", got, n, tt.want, tt.deleted)
			}
		})
	}
}

// TestPackedValues: FP32 tensors are logged as they are served (4 bytes a
// value) and read back as the float64 of their shortest decimal form, like
// the JSON the API answers with; float64 values keep every bit; NaN and ±Inf
// read back as 0.
func (storeContract) TestPackedValues(t *testing.T, newURL func(testing.TB) string) {
	tests := []struct {
		name     string
		e        Entry
		size     int // stored bytes of feature_values
		features map[string]float64
		outputs  []float64
	}{
		{"fp32", Entry{FeatureNames: []string{"a", "b"}, Features32: []float32{1.37, float32(math.Inf(1))}, Outputs32: []float32{0.1, 0.9}},
			1 + 2*4, map[string]float64{"a": 1.37, "b": 0}, []float64{0.1, 0.9}},
		{"fp64", Entry{Features: []float64{math.Pi, math.NaN()}, Outputs: []float64{1e-300}},
			1 + 2*8, map[string]float64{"x0": math.Pi, "x1": 0}, []float64{1e-300}},
		{"fp32 features, fp64 outputs", Entry{FeatureNames: []string{"a"}, Features32: []float32{0.5}, Outputs: []float64{2}},
			1 + 4, map[string]float64{"a": 0.5}, []float64{2}},
	}
	s := openURL(t, newURL(t))
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.e
			e.ID, e.Model, e.Version, e.Time = tt.name, "m", 1, time.Now()
			if err := s.insert(ctx, []Entry{e}); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := s.db.QueryRow(`SELECT length(feature_values) FROM predictions WHERE id = ?`, tt.name).Scan(&n); err != nil || n != tt.size {
				t.Errorf("feature_values holds %d bytes (%v), want %d", n, err, tt.size)
			}
			r, err := s.Get(ctx, tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r.Features, tt.features) || !reflect.DeepEqual(r.Outputs, tt.outputs) || *r.Prediction != tt.outputs[0] {
				t.Errorf("read back features %v outputs %v prediction %v, want %v %v", r.Features, r.Outputs, *r.Prediction, tt.features, tt.outputs)
			}
		})
	}
	var sets int
	s.db.QueryRow(`SELECT COUNT(*) FROM feature_sets`).Scan(&sets)
	if sets != 2 {
		t.Errorf("%d feature sets stored, want 2 (a,b and a)", sets)
	}
}

// TestFeatureSetsShared: rows with equal names share one stored set, whether
// they share the names slice (a card) or not, and a set survives reopening.
func (storeContract) TestFeatureSetsShared(t *testing.T, newURL func(testing.TB) string) {
	path := newURL(t)
	ctx := context.Background()
	card := []string{"temp", "dow"}
	for round := range 2 {
		s, err := Open(ctx, path, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var batch []Entry
		for i := range 4 {
			names := card
			if i%2 == 1 {
				names = []string{"temp", "dow"} // equal, another slice
			}
			batch = append(batch, Entry{ID: fmt.Sprint(round, i), Model: "m", Version: 1, FeatureNames: names, Features: []float64{float64(i), 1}})
		}
		batch = append(batch, Entry{ID: fmt.Sprint(round, "other"), Model: "m", Version: 1, FeatureNames: []string{"temp"}, Features: []float64{3}})
		if err := s.insert(ctx, batch); err != nil {
			t.Fatal(err)
		}
		var sets int
		s.db.QueryRow(`SELECT COUNT(*) FROM feature_sets`).Scan(&sets)
		if sets != 2 {
			t.Errorf("round %d: %d feature sets, want 2", round, sets)
		}
		if r, err := s.Get(ctx, fmt.Sprint(round, 3)); err != nil || r.Features["temp"] != 3 || r.Features["dow"] != 1 {
			t.Errorf("round %d: %+v %v", round, r, err)
		}
		s.Close()
	}
}

// TestReadsSchemaV1Rows: predictions written before the packed columns
// (JSON text) are still read.
func TestReadsSchemaV1Rows(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	if _, err := s.db.ExecContext(ctx, `INSERT INTO predictions (id, predicted_at, model, version, parameters, features, outputs, prediction)
		VALUES ('old', 1, 'm', 1, '{"date":"2016-08-01"}', '{"a":1.37,"b":2}', '[0.5,0.25]', 0.5)`); err != nil {
		t.Fatal(err)
	}
	r, err := s.Get(ctx, "old")
	want := Record{ID: "old", Model: "m", Version: 1, PredictedAt: time.UnixMicro(1).UTC(), Parameters: map[string]any{"date": "2016-08-01"},
		Features: map[string]float64{"a": 1.37, "b": 2}, Outputs: []float64{0.5, 0.25}, Prediction: r.Prediction}
	if err != nil || !reflect.DeepEqual(r, want) || *r.Prediction != 0.5 {
		t.Fatalf("v1 row: %+v %v", r, err)
	}
}

// TestRecordRowsFP32: a batch request's FP32 tensors are split into rows
// without copies.
func (storeContract) TestRecordRowsFP32(t *testing.T, newURL func(testing.TB) string) {
	s := openURL(t, newURL(t))
	l, _ := newLog(t, s, DefaultConfig(), Options{})
	start(t, l)
	ctx := context.Background()
	in, out := []float32{1, 2, 3, 4}, []float32{10, 20}
	if n := l.RecordRows(Entry{ID: "req", Model: "m", Version: 1, FeatureNames: []string{"a", "b"}, Features32: in, Outputs32: out}, 2); n != 2 {
		t.Fatalf("queued %d rows, want 2", n)
	}
	l.Flush(ctx)
	for id, want := range map[string][3]float64{"req/0": {1, 2, 10}, "req/1": {3, 4, 20}} {
		r, err := s.Get(ctx, id)
		if err != nil || r.Features["a"] != want[0] || r.Features["b"] != want[1] || *r.Prediction != want[2] || len(r.Outputs) != 1 {
			t.Errorf("%s: %+v %v, want %v", id, r, err, want)
		}
	}
}
