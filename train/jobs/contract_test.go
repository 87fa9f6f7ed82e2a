package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/flywheel-ml/flywheel/internal/harness"
)

// TestStoreContract runs the job queue's one contract suite against both
// backends: SQLite files and databases on a real PostgreSQL server.
func TestStoreContract(t *testing.T) {
	harness.RunContract(t, storeContract{})
}

// storeContract is the contract suite of the job queue's store: each
// exported method Test<Name> is a case, run against every backend.
type storeContract struct{}

// TestConcurrentClaims: four trainers (stores with their own owners)
// claiming from one queue at once get each job exactly once.
func (storeContract) TestConcurrentClaims(t *testing.T, newURL func(testing.TB) string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := newURL(t)
	const trainers, jobs = 4, 24
	stores := make([]*Store, trainers)
	for i := range stores {
		s, err := Open(ctx, Options{Path: url, Owner: fmt.Sprintf("trainer-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	for i := 0; i < jobs; i++ {
		if _, _, err := stores[0].Enqueue(ctx, Request{Model: "m"}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	claimed := map[string]string{}
	var wg sync.WaitGroup
	for _, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				j, err := s.Claim(ctx)
				if errors.Is(err, ErrNotFound) {
					return
				}
				if err != nil {
					t.Errorf("%s: claim: %v", s.Owner(), err)
					return
				}
				mu.Lock()
				if prev, dup := claimed[j.ID]; dup {
					t.Errorf("job %s claimed by %s and %s", j.ID, prev, s.Owner())
				}
				claimed[j.ID] = s.Owner()
				mu.Unlock()
				if _, err := s.Finish(ctx, j.ID, StateSucceeded, ""); err != nil {
					t.Errorf("%s: finish %s: %v", s.Owner(), j.ID, err)
				}
			}
		}()
	}
	wg.Wait()
	if len(claimed) != jobs {
		t.Fatalf("claimed %d jobs, want %d", len(claimed), jobs)
	}
	if n, _ := stores[0].CountState(ctx, StateSucceeded); n != jobs {
		t.Errorf("succeeded = %d, want %d", n, jobs)
	}
}

// TestLeaseTakeover: a trainer that stops renewing loses its job at lease
// expiry; another trainer claims it as the next attempt and the first one
// can no longer write to it.
func (storeContract) TestLeaseTakeover(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	url := newURL(t)
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	open := func(owner string) *Store {
		s, err := Open(ctx, Options{Path: url, Owner: owner, Lease: 10 * time.Second, Now: c.Now, NewID: seqIDs()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open("a"), open("b")
	if _, _, err := a.Enqueue(ctx, Request{Model: "m", Trigger: TriggerAlert, GroupKey: "g"}); err != nil {
		t.Fatal(err)
	}
	j, err := a.Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.StartStep(ctx, j.ID, "train"); err != nil {
		t.Fatal(err)
	}
	c.Add(5 * time.Second)
	if err := a.Renew(ctx, j.ID); err != nil {
		t.Fatalf("renew within the lease: %v", err)
	}
	c.Add(9 * time.Second) // renewed at +5s: still held at +14s
	if _, err := b.Claim(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("b claimed a job whose lease is held: %v", err)
	}
	c.Add(2 * time.Second) // a stopped renewing: expired at +15s
	got, err := b.Claim(ctx)
	if err != nil {
		t.Fatalf("b claim after expiry: %v", err)
	}
	if got.ID != j.ID || got.Attempt != 2 || got.Steps[0].State != StepInterrupted {
		t.Fatalf("taken over job = %+v", got)
	}
	if err := a.Renew(ctx, j.ID); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("a renew after takeover = %v, want ErrLeaseLost", err)
	}
	if _, err := a.StartStep(ctx, j.ID, "publish"); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("a StartStep after takeover = %v, want ErrLeaseLost", err)
	}
	if _, err := a.FinishStep(ctx, j.ID, "train", StepSucceeded, "", ""); err == nil {
		t.Error("a FinishStep after takeover succeeded")
	}
	if _, err := a.Finish(ctx, j.ID, StateSucceeded, ""); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("a Finish after takeover = %v, want ErrLeaseLost", err)
	}
	done, err := b.Finish(ctx, j.ID, StateSucceeded, "")
	if err != nil || done.State != StateSucceeded {
		t.Fatalf("b finish = %+v, %v", done, err)
	}
}

// TestEnqueueRace: the same alert group delivered to several trainers at
// once becomes one job.
func (storeContract) TestEnqueueRace(t *testing.T, newURL func(testing.TB) string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := newURL(t)
	const trainers = 4
	stores := make([]*Store, trainers)
	for i := range stores {
		s, err := Open(ctx, Options{Path: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	var wg sync.WaitGroup
	created := make(chan string, trainers*3)
	for _, s := range stores {
		for k := 0; k < 3; k++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				j, c, err := s.Enqueue(ctx, Request{Model: "m", Trigger: TriggerAlert, GroupKey: "{}:{alertname=\"FeatureDrift\"}"})
				if err != nil {
					t.Error(err)
					return
				}
				if c {
					created <- j.ID
				}
			}()
		}
	}
	wg.Wait()
	close(created)
	var ids []string
	for id := range created {
		ids = append(ids, id)
	}
	list, _ := stores[0].List(ctx, ListOptions{})
	if len(ids) != 1 || len(list) != 1 || list[0].Deliveries != trainers*3 {
		t.Fatalf("created %v, jobs %+v; want one job with %d deliveries", ids, list, trainers*3)
	}
}

// TestWorkerRenewsLease: a worker running a job longer than the lease keeps
// it (renewals), so another trainer cannot take it over meanwhile.
func TestWorkerRenewsLease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	url := newSQLiteURL(t)
	s, err := Open(ctx, Options{Path: url, Owner: "a", Lease: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	other, err := Open(ctx, Options{Path: url, Owner: "b", Lease: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	release := make(chan struct{})
	w, _ := NewWorker(WorkerOptions{Store: s, Poll: 10 * time.Millisecond, Runner: RunnerFunc(func(ctx context.Context, job Job, rec *Recorder) error {
		return rec.Step(ctx, "train", func(ctx context.Context, _ io.Writer) (string, error) {
			select {
			case <-release:
				return "", nil
			case <-ctx.Done():
				return "", ctx.Err()
			}
		})
	})})
	j, _, _ := s.Enqueue(ctx, Request{Model: "m"})
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- w.Run(wctx) }()
	for w.Current() != j.ID {
		if ctx.Err() != nil {
			t.Fatal("the worker never started the job")
		}
		time.Sleep(5 * time.Millisecond)
	}
	deadline := time.Now().Add(2500 * time.Millisecond) // 2.5 leases
	for time.Now().Before(deadline) {
		if _, err := other.Claim(ctx); !errors.Is(err, ErrNotFound) {
			t.Fatalf("another trainer claimed during a renewed lease: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(release)
	for {
		got, _ := s.Get(ctx, j.ID)
		if got.State == StateSucceeded && got.Attempt == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("job = %+v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	wcancel()
	<-done
}

func newSQLiteURL(t testing.TB) string { return t.TempDir() + "/jobs.db" }
