package feedback

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/predlog"
)

type env struct {
	url   string
	db    *predlog.Store
	log   *predlog.Log
	store *Store
	reg   *prometheus.Registry
	now   time.Time
}

var ridershipCard = &modelrepo.Card{
	Name: "ridership", Version: 2, Task: "regression",
	CreatedAt:  time.Date(2026, 11, 22, 7, 0, 0, 0, time.UTC),
	Thresholds: map[string]float64{"mae": 1.6},
	Training: modelrepo.Training{Algorithm: "gbdt", RunID: "run-42", Tracker: "sqlite", GitCommit: "abc123",
		Dataset: modelrepo.Dataset{Name: "chicago", Digest: "sha256:feed", Rows: 3997, From: "2001-01-22", Until: "2011-12-31"}},
}

var classifierCard = &modelrepo.Card{Name: "iris", Version: 1, Task: "classification"}

func cards(model string, version int) *modelrepo.Card {
	switch {
	case model == "ridership" && version == 2:
		return ridershipCard
	case model == "iris" && version == 1:
		return classifierCard
	}
	return nil
}

// newEnv opens a database, starts a prediction log (flushing only on
// demand, so lookups exercise Flush) and builds a Store.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvURL(t, filepath.Join(t.TempDir(), "flywheel.db"))
}

func newEnvURL(t *testing.T, url string) *env {
	t.Helper()
	db, l, reg := runLog(t, url, time.Hour)
	e := &env{url: url, db: db, log: l, reg: reg, now: time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)}
	var err error
	e.store, err = New(Options{DB: db, Log: l, Cards: cards, Registerer: reg, Now: func() time.Time { return e.now }})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// runLog opens the prediction database at url and runs a prediction log on
// it (flushing every flush, metrics in a fresh pedantic registry) until
// the test ends.
func runLog(t *testing.T, url string, flush time.Duration) (*predlog.Store, *predlog.Log, *prometheus.Registry) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	db, err := predlog.Open(ctx, url, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cfg := predlog.DefaultConfig()
	cfg.FlushInterval = flush
	reg := prometheus.NewPedanticRegistry()
	l, err := predlog.New(predlog.Options{Config: cfg, Store: db, Registerer: reg})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; db.Close() })
	return db, l, reg
}

func (e *env) predict(id, model string, version int, pred float64, params map[string]any) {
	e.log.Record(predlog.Entry{ID: id, Time: e.now.Add(-time.Hour), Model: model, Version: version, Parameters: params,
		FeatureNames: []string{"Austin", "dow"}, Features: []float64{1.25, 3}, Outputs: []float64{pred}})
}

func f(v float64) *float64 { return &v }

func statuses(rs []Result) []string {
	var s []string
	for _, r := range rs {
		s = append(s, r.Status)
	}
	return s
}

func (storeContract) TestAddJoinsAndCounts(t *testing.T, newURL func(testing.TB) string) {
	e := newEnvURL(t, newURL(t))
	ctx := context.Background()
	e.store.AddVersion("ridership", 2, ridershipCard)
	e.predict("replay-2016-08-01", "ridership", 2, 15, map[string]any{"date": "2016-08-01"})
	e.predict("replay-2016-08-02", "ridership", 2, 10, nil)

	steps := []struct {
		name    string
		labels  []Label
		want    []string
		errPart string
		count   float64 // labels_total after the step
		abs, sq float64
	}{
		{"first labels", []Label{{ID: "replay-2016-08-01", Value: f(17)}, {ID: "replay-2016-08-02", Value: f(9)}},
			[]string{"created", "created"}, "", 2, 3, 5},
		{"retry is unchanged", []Label{{ID: "replay-2016-08-01", Value: f(17)}},
			[]string{"unchanged"}, "", 2, 3, 5},
		{"correction wins and counts", []Label{{ID: "replay-2016-08-01", Value: f(16), Model: "ridership"}},
			[]string{"updated"}, "", 3, 4, 6},
		{"unknown id without features", []Label{{ID: "nope", Value: f(1)}},
			[]string{"error"}, "unknown prediction id", 3, 4, 6},
		{"model mismatch", []Label{{ID: "replay-2016-08-02", Value: f(9), Model: "taxi"}},
			[]string{"error"}, "does not match", 3, 4, 6},
		{"unlogged with features", []Label{{ID: "ext-1", Value: f(12), Model: "ridership", Features: map[string]float64{"Austin": 2}}},
			[]string{"created"}, "", 3, 4, 6},
		{"partial failure", []Label{{ID: "", Value: f(1)}, {ID: "replay-2016-08-02", Value: f(11)}, {ID: "x", Value: f(math.NaN())}},
			[]string{"error", "updated", "error"}, "id is missing", 4, 5, 7},
		{"duplicate id in one request: last wins", []Label{{ID: "ext-2", Value: f(1), Model: "m", Features: map[string]float64{"a": 1}},
			{ID: "ext-2", Value: f(2), Model: "m", Features: map[string]float64{"a": 1}}},
			[]string{"created", "updated"}, "", 4, 5, 7},
	}
	for _, st := range steps {
		rs, err := e.store.Add(ctx, st.labels)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := statuses(rs); !slices.Equal(got, st.want) {
			t.Fatalf("%s: statuses %v, want %v (%+v)", st.name, got, st.want, rs)
		}
		if st.errPart != "" && !strings.Contains(rs[0].Error, st.errPart) {
			t.Fatalf("%s: error %q, want it to mention %q", st.name, rs[0].Error, st.errPart)
		}
		for i, r := range rs {
			if r.Index != i {
				t.Fatalf("%s: result %d has index %d", st.name, i, r.Index)
			}
		}
		labels := testutil.ToFloat64(e.store.m.labels.WithLabelValues("ridership", "2"))
		abs := testutil.ToFloat64(e.store.m.absErr.WithLabelValues("ridership", "2"))
		sq := testutil.ToFloat64(e.store.m.sqErr.WithLabelValues("ridership", "2"))
		if labels != st.count || abs != st.abs || sq != st.sq {
			t.Fatalf("%s: labels %g abs %g sq %g, want %g %g %g", st.name, labels, abs, sq, st.count, st.abs, st.sq)
		}
	}
	if l, err := e.db.Label(ctx, "replay-2016-08-01"); err != nil || l.Revisions != 2 {
		t.Errorf("revisions = %d (%v), want 2", l.Revisions, err)
	}
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(`
# HELP flywheel_model_error_threshold Highest acceptable live error of a model version, from its model card's thresholds.
# TYPE flywheel_model_error_threshold gauge
flywheel_model_error_threshold{metric="mae",model="ridership",version="2"} 1.6
`), "flywheel_model_error_threshold"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(e.reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}

func (storeContract) TestClassificationCorrect(t *testing.T, newURL func(testing.TB) string) {
	e := newEnvURL(t, newURL(t))
	e.store.AddVersion("iris", 1, classifierCard)
	e.predict("a", "iris", 1, 2, nil)
	e.predict("b", "iris", 1, 1, nil)
	if _, err := e.store.Add(context.Background(), []Label{{ID: "a", Value: f(2)}, {ID: "b", Value: f(0)}}); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(e.store.m.correct.WithLabelValues("iris", "1")); got != 1 {
		t.Fatalf("correct = %g, want 1", got)
	}
	if got := testutil.ToFloat64(e.store.m.labels.WithLabelValues("iris", "1")); got != 2 {
		t.Fatalf("labels = %g, want 2", got)
	}
}

func (storeContract) TestExport(t *testing.T, newURL func(testing.TB) string) {
	e := newEnvURL(t, newURL(t))
	ctx := context.Background()
	e.predict("replay-2016-08-01", "ridership", 2, 15, map[string]any{"date": "2016-08-01"})
	e.predict("other", "taxi", 1, 3, nil)
	if _, err := e.store.Add(ctx, []Label{{ID: "replay-2016-08-01", Value: f(17)}, {ID: "other", Value: f(3)}}); err != nil {
		t.Fatal(err)
	}
	e.now = e.now.Add(time.Hour)
	if _, err := e.store.Add(ctx, []Label{{ID: "ext", Value: f(12), Model: "ridership", Features: map[string]float64{"Austin": 2}}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		since time.Time
		ids   []string
	}{
		{time.Time{}, []string{"replay-2016-08-01", "ext"}},
		{e.now, []string{"ext"}},
		{e.now.Add(time.Second), nil},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		n, err := e.store.Export(ctx, "ridership", tt.since, &buf)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
		if buf.Len() == 0 {
			lines = nil
		}
		if n != len(tt.ids) || len(lines) != len(tt.ids) {
			t.Fatalf("since %v: %d rows, %d lines, want %d", tt.since, n, len(lines), len(tt.ids))
		}
		for i, line := range lines {
			var row map[string]any
			if err := json.Unmarshal([]byte(line), &row); err != nil {
				t.Fatal(err)
			}
			var keys []string
			for k := range row {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			want := []string{"features", "id", "label", "labelled_at", "model", "parameters", "predicted_at", "prediction", "version"}
			if !slices.Equal(keys, want) {
				t.Fatalf("export keys %v, want %v", keys, want)
			}
			if row["id"] != tt.ids[i] {
				t.Fatalf("row %d id %v, want %s", i, row["id"], tt.ids[i])
			}
		}
		if len(lines) == 2 {
			if lines[0] != `{"id":"replay-2016-08-01","model":"ridership","version":2,"predicted_at":"2026-11-22T07:00:00Z","labelled_at":"2026-11-22T08:00:00Z","features":{"Austin":1.25,"dow":3},"label":17,"prediction":15,"parameters":{"date":"2016-08-01"}}` {
				t.Errorf("logged row: %s", lines[0])
			}
			if lines[1] != `{"id":"ext","model":"ridership","version":null,"predicted_at":null,"labelled_at":"2026-11-22T09:00:00Z","features":{"Austin":2},"label":12,"prediction":null,"parameters":{}}` {
				t.Errorf("unlogged row: %s", lines[1])
			}
		}
	}
}

func (storeContract) TestGetWithLineage(t *testing.T, newURL func(testing.TB) string) {
	e := newEnvURL(t, newURL(t))
	ctx := context.Background()
	e.predict("p1", "ridership", 2, 15, map[string]any{"date": "2016-08-01"})
	p, err := e.store.Get(ctx, "p1") // not flushed yet: Get flushes
	if err != nil {
		t.Fatal(err)
	}
	if !p.Logged || p.Label != nil || p.Lineage == nil || p.Lineage.RunID != "run-42" || p.Lineage.Dataset.Digest != "sha256:feed" ||
		p.Lineage.GitCommit != "abc123" || *p.Prediction != 15 || p.Parameters["date"] != "2016-08-01" {
		t.Fatalf("Get: %+v lineage %+v", p, p.Lineage)
	}
	if _, err := e.store.Add(ctx, []Label{{ID: "p1", Value: f(16)}}); err != nil {
		t.Fatal(err)
	}
	// Retention removes the prediction; the label keeps its copy.
	if _, err := harness.OpenDB(t, e.url).Exec(`DELETE FROM predictions`); err != nil {
		t.Fatal(err)
	}
	p, err = e.store.Get(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	if p.Logged || p.Label == nil || p.Label.Value != 16 || p.Version != 2 || p.Features["Austin"] != 1.25 || *p.Prediction != 15 || p.Lineage == nil {
		t.Fatalf("Get after pruning: %+v", p)
	}
	b, _ := json.Marshal(p)
	for _, k := range []string{`"id":"p1"`, `"version":2`, `"label":{"value":16`, `"lineage":{"run_id":"run-42"`} {
		if !bytes.Contains(b, []byte(k)) {
			t.Errorf("JSON %s lacks %s", b, k)
		}
	}
	if _, err := e.store.Get(ctx, "missing"); err != ErrNotFound {
		t.Fatalf("Get(missing) = %v, want ErrNotFound", err)
	}
}

func TestLabelValidate(t *testing.T) {
	tests := []struct {
		l    Label
		want string
	}{
		{Label{ID: "a", Value: f(1)}, ""},
		{Label{Value: f(1)}, "id is missing"},
		{Label{ID: "request 7/0 é", Value: f(1)}, ""},
		{Label{ID: "tab\there", Value: f(1)}, "control characters"},
		{Label{ID: "bad\xffutf8", Value: f(1)}, "UTF-8"},
		{Label{ID: strings.Repeat("x", 257), Value: f(1)}, "256 bytes"},
		{Label{ID: "a"}, "value is missing"},
		{Label{ID: "a", Value: f(math.Inf(1))}, "finite"},
		{Label{ID: "a", Value: f(1), Model: "../etc"}, "valid model name"},
		{Label{ID: "a", Value: f(1), Version: -1}, "positive"},
		{Label{ID: "a", Value: f(1), Features: map[string]float64{"x": math.NaN()}}, "finite"},
		{Label{ID: "a", Value: f(1), Features: map[string]float64{"": 1}}, "feature names"},
	}
	for _, tt := range tests {
		err := tt.l.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.l, err, tt.want)
		}
	}
}
