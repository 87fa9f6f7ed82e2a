package feedback

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flywheel-ml/flywheel/internal/harness"
	"github.com/flywheel-ml/flywheel/server/predlog"
)

// TestStoreContract runs the feedback store's one contract suite against
// both backends: SQLite files and databases on a real PostgreSQL server.
func TestStoreContract(t *testing.T) {
	harness.RunContract(t, storeContract{})
}

// storeContract is the contract suite of the feedback store: each
// exported method Test<Name> is a case, run against every backend.
type storeContract struct{}

// replica is one serve replica's prediction log and feedback store on a
// shared database.
type replica struct {
	db    *predlog.Store
	log   *predlog.Log
	store *Store
	reg   *prometheus.Registry
}

func newReplica(t *testing.T, url string) *replica {
	t.Helper()
	r := &replica{}
	r.db, r.log, r.reg = runLog(t, url, 20*time.Millisecond)
	var err error
	if r.store, err = New(Options{DB: r.db, Log: r.log, Cards: cards, Registerer: r.reg, SharedWait: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestReplicas: three replicas on one database (several processes' worth
// of connections): a label sent to any replica joins a prediction logged by
// another, even one still in that replica's queue; the same label sent to
// every replica at once is stored once; the replicas' counters add up to
// the labels stored, not a multiple of them.
func (storeContract) TestReplicas(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	url := newURL(t)
	rs := []*replica{newReplica(t, url), newReplica(t, url), newReplica(t, url)}
	const n = 30
	for i := 0; i < n; i++ {
		rs[i%3].log.Record(predlog.Entry{ID: fmt.Sprintf("p-%d", i), Time: time.Now(), Model: "ridership", Version: 2,
			FeatureNames: []string{"Austin", "dow"}, Features: []float64{1, 2}, Outputs: []float64{float64(i)}})
	}
	// Label i goes to the next replica (never the one that logged it) at
	// once, while the prediction may still be queued there.
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := rs[(i+1)%3].store.Add(ctx, []Label{{ID: fmt.Sprintf("p-%d", i), Value: f(float64(i) + 2)}})
			if err != nil || res[0].Status != StatusCreated {
				t.Errorf("label p-%d: %+v, %v", i, res, err)
			}
		}()
	}
	wg.Wait()
	// The same label to all three at once: one row, one created.
	var created sync.Map
	for k, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := r.store.Add(ctx, []Label{{ID: "p-0", Value: f(7)}})
			if err != nil {
				t.Error(err)
				return
			}
			created.Store(k, res[0].Status)
		}()
	}
	wg.Wait()
	stats, err := rs[0].db.LabelStats(ctx)
	if err != nil || len(stats) != 1 || stats[0].Labels != n {
		t.Fatalf("label totals %+v (%v), want %d labels of ridership 2", stats, err, n)
	}
	if l, err := rs[0].db.Label(ctx, "p-0"); err != nil || l.Revisions < 2 {
		t.Errorf("p-0 revisions = %d, %v", l.Revisions, err)
	}
	var counted float64
	for _, r := range rs {
		counted += testutil.ToFloat64(r.store.m.labels.WithLabelValues("ridership", "2"))
	}
	// n first labels, plus the re-sends of p-0 that changed the value
	// (every replica counts only what it stored itself).
	updates := 0
	created.Range(func(_, v any) bool {
		if v == StatusUpdated || v == StatusCreated {
			updates++
		}
		return true
	})
	if counted != float64(n+updates) {
		t.Errorf("replicas counted %v labels, want %d (%d stored + %d updates)", counted, n+updates, n, updates)
	}
	if absErr := stats[0].AbsErr; absErr != 2*(n-1)+7 {
		t.Errorf("stored absolute error = %v, want %d", absErr, 2*(n-1)+7)
	}
}
