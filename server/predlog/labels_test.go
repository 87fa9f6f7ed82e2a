package predlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func fp(v float64) *float64 { return &v }

// TestPutLabels: created, unchanged and updated in order within one call
// and across calls; revisions count the stored values; what a label
// copies (or lacks) round-trips, NULLs included.
func (storeContract) TestPutLabels(t *testing.T, newURL func(testing.TB) string) {
	s := openURL(t, newURL(t))
	ctx := context.Background()
	at := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	logged := Label{ID: "replay-2016-08-01", Model: "ridership", Version: 2, Value: 17, LabelledAt: at,
		PredictedAt: at.Add(-time.Hour), Features: json.RawMessage(`{"Austin":1.25,"dow":3}`),
		Parameters: json.RawMessage(`{"date":"2016-08-01"}`), Prediction: fp(15)}
	unlogged := Label{ID: "ext-1", Model: "ridership", Value: 12, LabelledAt: at, Features: json.RawMessage(`{"Austin":2}`)}
	steps := []struct {
		name   string
		labels []Label
		want   []LabelChange
	}{
		{"first labels", []Label{logged, unlogged}, []LabelChange{LabelCreated, LabelCreated}},
		{"same value again", []Label{logged}, []LabelChange{LabelUnchanged}},
		{"new value, then the same id twice in one call", []Label{
			with(logged, 16, at.Add(time.Minute)), with(unlogged, 13, at.Add(time.Minute)), with(unlogged, 14, at.Add(2*time.Minute))},
			[]LabelChange{LabelUpdated, LabelUpdated, LabelUpdated}},
		{"empty call", nil, []LabelChange{}},
	}
	for _, st := range steps {
		got, err := s.PutLabels(ctx, st.labels)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(st.want) {
			t.Fatalf("%s: changes %v, want %v", st.name, got, st.want)
		}
	}
	tests := []struct {
		id   string
		want Label
	}{
		{logged.ID, withRevisions(with(logged, 16, at.Add(time.Minute)), 2)},
		{unlogged.ID, withRevisions(with(unlogged, 14, at.Add(2*time.Minute)), 3)},
	}
	for _, tt := range tests {
		got, err := s.Label(ctx, tt.id)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := fmt.Sprintf("%+v %v", got, deref(got.Prediction)), fmt.Sprintf("%+v %v", tt.want, deref(tt.want.Prediction)); !sameLabel(got, tt.want) {
			t.Errorf("label %s:\n got %s\nwant %s", tt.id, g, w)
		}
	}
	if _, err := s.Label(ctx, "nope"); !errors.Is(err, ErrNoLabel) {
		t.Errorf("unknown id: %v, want ErrNoLabel", err)
	}
}

func with(l Label, v float64, at time.Time) Label {
	l.Value, l.LabelledAt = v, at
	return l
}

func withRevisions(l Label, n int) Label {
	l.Revisions = n
	return l
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func sameLabel(a, b Label) bool {
	return a.ID == b.ID && a.Model == b.Model && a.Version == b.Version && a.Value == b.Value &&
		a.LabelledAt.Equal(b.LabelledAt) && a.PredictedAt.Equal(b.PredictedAt) &&
		string(a.Features) == string(b.Features) && string(a.Parameters) == string(b.Parameters) &&
		deref(a.Prediction) == deref(b.Prediction) && a.Revisions == b.Revisions
}

// TestLabelsExport: Labels reads one model's labels from a time on, oldest
// first and ties by id, streamed; LabelStats totals the labels joined to a
// logged prediction per model version.
func (storeContract) TestLabelsExport(t *testing.T, newURL func(testing.TB) string) {
	s := openURL(t, newURL(t))
	ctx := context.Background()
	t0 := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	put := []Label{
		{ID: "b", Model: "ridership", Version: 2, Value: 10, LabelledAt: t0, PredictedAt: t0, Features: json.RawMessage(`{}`), Prediction: fp(12)},
		{ID: "a", Model: "ridership", Version: 2, Value: 20, LabelledAt: t0, PredictedAt: t0, Features: json.RawMessage(`{}`), Prediction: fp(17)},
		{ID: "c", Model: "ridership", Version: 3, Value: 5, LabelledAt: t0.Add(time.Second), PredictedAt: t0, Features: json.RawMessage(`{}`), Prediction: fp(4)},
		{ID: "old", Model: "ridership", Version: 2, Value: 1, LabelledAt: t0.Add(-time.Hour), PredictedAt: t0, Features: json.RawMessage(`{}`), Prediction: fp(1)},
		{ID: "ext", Model: "ridership", Value: 7, LabelledAt: t0.Add(2 * time.Second), Features: json.RawMessage(`{"x":1}`)},
		{ID: "other", Model: "taxi", Version: 1, Value: 3, LabelledAt: t0, PredictedAt: t0, Features: json.RawMessage(`{}`), Prediction: fp(3)},
	}
	if _, err := s.PutLabels(ctx, put); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		model string
		since time.Time
		ids   []string
	}{
		{"ridership", t0, []string{"a", "b", "c", "ext"}},
		{"ridership", time.Time{}, []string{"old", "a", "b", "c", "ext"}},
		{"ridership", t0.Add(time.Second), []string{"c", "ext"}},
		{"taxi", t0, []string{"other"}},
		{"none", t0, nil},
	}
	for _, tt := range tests {
		rows, err := s.Labels(ctx, tt.model, tt.since)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for rows.Next() {
			ids = append(ids, rows.Label().ID)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		if fmt.Sprint(ids) != fmt.Sprint(tt.ids) {
			t.Errorf("labels of %s since %v: %v, want %v", tt.model, tt.since, ids, tt.ids)
		}
	}
	stats, err := s.LabelStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []LabelStats{
		{Model: "ridership", Version: 2, Labels: 3, AbsErr: 2 + 3 + 0, SquaredErr: 4 + 9 + 0},
		{Model: "ridership", Version: 3, Labels: 1, AbsErr: 1, SquaredErr: 1},
		{Model: "taxi", Version: 1, Labels: 1},
	}
	if fmt.Sprint(stats) != fmt.Sprint(want) {
		t.Errorf("label totals %+v, want %+v", stats, want)
	}
	// A failing database is reported when the read starts.
	s.Close()
	if _, err := s.Labels(ctx, "ridership", t0); err == nil {
		t.Error("Labels on a closed database: no error")
	}
}

// TestPutLabelsConcurrently: three stores on one database (several serve
// replicas) put the same ids at once: one row per id, whose revisions equal
// the changes reported created or updated.
func (storeContract) TestPutLabelsConcurrently(t *testing.T, newURL func(testing.TB) string) {
	url := newURL(t)
	stores := []*Store{openURL(t, url), openURL(t, url), openURL(t, url)}
	ctx := context.Background()
	const ids, writers = 5, 12
	var mu sync.Mutex
	changed := map[string]int{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var put []Label
			for i := range ids {
				// Two writers send each value: some puts find it stored.
				put = append(put, Label{ID: fmt.Sprintf("p-%d", i), Model: "m", Version: 1, Value: float64(w / 2),
					LabelledAt: time.Now(), Features: json.RawMessage(`{}`), Prediction: fp(0)})
			}
			got, err := stores[w%3].PutLabels(ctx, put)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for i, c := range got {
				if c == LabelCreated || c == LabelUpdated {
					changed[put[i].ID]++
				}
			}
		}()
	}
	wg.Wait()
	stats, err := stores[0].LabelStats(ctx)
	if err != nil || len(stats) != 1 || stats[0].Labels != ids {
		t.Fatalf("label totals %+v (%v), want %d rows", stats, err, ids)
	}
	for i := range ids {
		id := fmt.Sprintf("p-%d", i)
		l, err := stores[1].Label(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if l.Revisions != changed[id] || l.Revisions < 1 {
			t.Errorf("%s: %d revisions, %d changes reported", id, l.Revisions, changed[id])
		}
	}
}

// TestPutSameLabelConcurrently: replicas put the same label (same id, same
// value) at once, as a load balancer retrying a label on a second replica
// does: one row, one revision, one put reported created.
func (storeContract) TestPutSameLabelConcurrently(t *testing.T, newURL func(testing.TB) string) {
	url := newURL(t)
	stores := []*Store{openURL(t, url), openURL(t, url), openURL(t, url)}
	ctx := context.Background()
	const rounds = 20
	for r := range rounds {
		id := fmt.Sprintf("same-%d", r)
		var created, unchanged atomic.Int32
		var wg sync.WaitGroup
		for _, s := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := s.PutLabels(ctx, []Label{{ID: id, Model: "m", Version: 1, Value: 4.5,
					LabelledAt: time.Now(), Features: json.RawMessage(`{}`), Prediction: fp(0)}})
				if err != nil {
					t.Error(err)
					return
				}
				switch got[0] {
				case LabelCreated:
					created.Add(1)
				case LabelUnchanged:
					unchanged.Add(1)
				}
			}()
		}
		wg.Wait()
		l, err := stores[0].Label(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if l.Revisions != 1 || created.Load() != 1 || unchanged.Load() != int32(len(stores)-1) {
			t.Fatalf("%s put by %d replicas at once: %d revisions, %d reported created, %d unchanged; want 1, 1, %d",
				id, len(stores), l.Revisions, created.Load(), unchanged.Load(), len(stores)-1)
		}
	}
}
