package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func seqIDs() func() string {
	var mu sync.Mutex
	n := 0
	return func() string { mu.Lock(); defer mu.Unlock(); n++; return fmt.Sprintf("job-%d", n) }
}

func openStore(t *testing.T, path string, c *clock, ids func() string) *Store {
	t.Helper()
	// The tests move the clock by hours without renewing leases.
	s, err := Open(context.Background(), Options{Path: path, Cooldown: time.Hour, Now: c.Now, NewID: ids, Lease: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (storeContract) TestEnqueueDedup(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := openStore(t, newURL(t), c, seqIDs())
	alert := func(key string) Request {
		return Request{Model: "ridership", Trigger: TriggerAlert, GroupKey: key, Alerts: []string{"FeatureDrift"}, FiredAt: c.Now().Add(-time.Minute)}
	}
	type step struct {
		advance time.Duration
		req     Request
		claim   bool // claim the next job before enqueueing
		wantID  string
		created bool
	}
	for i, st := range []step{
		{req: alert("g1"), wantID: "job-1", created: true},
		{advance: time.Minute, req: alert("g1"), wantID: "job-1"},                                 // re-send
		{req: alert("g2"), wantID: "job-1"},                                                       // other group, job-1 still queued: folded
		{claim: true, req: alert("g2"), wantID: "job-2", created: true},                           // job-1 running: g2 gets its own
		{advance: 30 * time.Minute, req: alert("g1"), wantID: "job-1"},                            // within cooldown of job-1
		{advance: 30 * time.Minute, req: alert("g2"), wantID: "job-2"},                            // within cooldown of job-2
		{advance: 2 * time.Minute, claim: true, req: alert("g1"), wantID: "job-3", created: true}, // cooldown over
		{req: Request{Model: "ridership"}, wantID: "job-3"},                                       // manual: always a new job
	} {
		c.Add(st.advance)
		if st.claim {
			if _, err := s.Claim(ctx); err != nil {
				t.Fatalf("step %d: claim: %v", i, err)
			}
		}
		j, created, err := s.Enqueue(ctx, st.req)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if st.req.GroupKey == "" {
			// Manual requests always create a job.
			if !created || j.ID == st.wantID {
				t.Errorf("step %d: manual request got %s created=%v, want a new job", i, j.ID, created)
			}
			continue
		}
		if j.ID != st.wantID || created != st.created {
			t.Errorf("step %d: got %s created=%v, want %s created=%v", i, j.ID, created, st.wantID, st.created)
		}
	}
	j, err := s.Get(ctx, "job-1")
	if err != nil {
		t.Fatal(err)
	}
	if j.Deliveries != 4 || j.State != StateRunning || j.Attempt != 1 || j.FiredAt == nil {
		t.Errorf("job-1 = %+v, want 4 deliveries, running, attempt 1, fired_at set", j)
	}
	if n, _ := s.CountState(ctx, StateQueued); n != 2 {
		t.Errorf("queued = %d, want 2 (job-3, manual; job-2 was claimed)", n)
	}
}

func (storeContract) TestStepsAndFinish(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := openStore(t, newURL(t), c, seqIDs())
	if _, _, err := s.Enqueue(ctx, Request{Model: "m", Params: []byte(`{"lr":0.1}`)}); err != nil {
		t.Fatal(err)
	}
	j, err := s.Claim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second claim: %v, want ErrNotFound", err)
	}
	rec := &Recorder{store: s, job: j.ID, logger: s.logger}
	err = rec.Step(ctx, "snapshot", func(ctx context.Context, log io.Writer) (string, error) {
		fmt.Fprintln(log, "read 10 rows")
		c.Add(1500 * time.Millisecond)
		return "10 rows", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = rec.Step(ctx, "gate", func(ctx context.Context, log io.Writer) (string, error) {
		c.Add(time.Second)
		return "", &Rejection{Reason: "candidate mae 2 > champion mae 1"}
	})
	var rej *Rejection
	if !errors.As(err, &rej) {
		t.Fatalf("gate err = %v", err)
	}
	if err := rec.Result(ctx, map[string]any{"candidate_mae": 2.0}); err != nil {
		t.Fatal(err)
	}
	done, err := s.Finish(ctx, j.ID, StateRejected, rej.Reason)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Finish(ctx, j.ID, StateFailed, "again"); err == nil {
		t.Error("finishing a finished job must fail")
	}
	if len(done.Steps) != 2 || done.Steps[0].Seconds != 1.5 || done.Steps[0].Log != "read 10 rows\n" || done.Steps[0].Detail != "10 rows" ||
		done.Steps[1].State != StepRejected || done.Steps[1].Detail != "candidate mae 2 > champion mae 1" {
		t.Errorf("steps = %+v", done.Steps)
	}
	if done.Result["candidate_mae"] != 2.0 || string(done.Params) != `{"lr":0.1}` || done.Step != "gate" || !done.Final() {
		t.Errorf("job = %+v", done)
	}
	list, err := s.List(ctx, ListOptions{State: StateRejected})
	if err != nil || len(list) != 1 {
		t.Errorf("List(rejected) = %v, %v", list, err)
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(nope) = %v", err)
	}
}

// TestRecover leaves a job running in the database the way a killed process
// does (closing the store mid-step), then reopens it.
func (storeContract) TestRecover(t *testing.T, newURL func(testing.TB) string) {
	ctx := context.Background()
	path := newURL(t)
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	ids := seqIDs()
	crash := func() {
		s, err := Open(ctx, Options{Path: path, Now: c.Now, NewID: ids})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recover(ctx); err != nil {
			t.Fatal(err)
		}
		j, err := s.Claim(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.StartStep(ctx, j.ID, "train"); err != nil {
			t.Fatal(err)
		}
		s.Close() // the process dies here
	}
	s, err := Open(ctx, Options{Path: path, Now: c.Now, NewID: ids})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Enqueue(ctx, Request{Model: "m", Trigger: TriggerAlert, GroupKey: "g"}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	crash()                           // attempt 1 dies
	c.Add(DefaultLease + time.Second) // in a shared database only an expired lease is recovered
	s = openStore(t, path, c, ids)
	got, err := s.Recover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].State != StateQueued || !strings.Contains(got[0].Reason, "attempt 1 interrupted during step train") || !strings.HasSuffix(got[0].Reason, "; retrying") {
		t.Fatalf("after first crash: %+v", got)
	}
	if st := got[0].Steps[0]; st.State != StepInterrupted || st.FinishedAt == nil {
		t.Errorf("interrupted step = %+v", st)
	}
	s.Close()

	crash() // attempt 2 dies too
	c.Add(DefaultLease + time.Second)
	s = openStore(t, path, c, ids)
	got, err = s.Recover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].State != StateFailed || got[0].Attempt != 2 || got[0].FinishedAt == nil ||
		!strings.Contains(got[0].Reason, "attempt 2 of 2 interrupted during step train") || !strings.HasSuffix(got[0].Reason, "; no attempts left") {
		t.Fatalf("after second crash: %+v", got)
	}
	if len(got[0].Steps) != 2 || got[0].Steps[1].Attempt != 2 {
		t.Errorf("steps = %+v", got[0].Steps)
	}
	// A re-sent alert within the cooldown still maps to the failed job: no second run.
	j, created, err := s.Enqueue(ctx, Request{Model: "m", Trigger: TriggerAlert, GroupKey: "g"})
	if err != nil || created || j.ID != "job-1" {
		t.Errorf("re-send after failure = %s created=%v err=%v", j.ID, created, err)
	}
	// Migrations are applied once: reopening is a no-op.
	var n int
	if err := s.db.QueryRow(`SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil || n != len(migrations[s.db.Dialect]) {
		t.Errorf("schema_migrations rows = %d, %v", n, err)
	}
}

func (storeContract) TestWorker(t *testing.T, newURL func(testing.TB) string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{Path: newURL(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg, func() float64 { n, _ := s.CountState(ctx, StateQueued); return float64(n) })

	outcomes := map[string]error{
		"ok":     nil,
		"reject": &Rejection{Reason: "not better"},
		"fail":   errors.New("trainer exited 1"),
	}
	var mu sync.Mutex
	running, maxRunning := 0, 0
	runner := RunnerFunc(func(ctx context.Context, job Job, rec *Recorder) error {
		mu.Lock()
		running++
		maxRunning = max(maxRunning, running)
		mu.Unlock()
		defer func() { mu.Lock(); running--; mu.Unlock() }()
		if err := rec.Step(ctx, "work", func(ctx context.Context, _ io.Writer) (string, error) {
			time.Sleep(20 * time.Millisecond)
			return "", nil
		}); err != nil {
			return err
		}
		return outcomes[string(job.Params)[1:len(job.Params)-1]]
	})
	w, err := NewWorker(WorkerOptions{Store: s, Runner: runner, Metrics: m, Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ok", "reject", "fail"} {
		if _, _, err := s.Enqueue(ctx, Request{Model: "m", Params: []byte(`"` + name + `"`)}); err != nil {
			t.Fatal(err)
		}
	}
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- w.Run(wctx) }()
	w.Wake()
	for {
		list, _ := s.List(ctx, ListOptions{})
		final := 0
		for _, j := range list {
			if j.Final() {
				final++
			}
		}
		if final == 3 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("jobs did not finish: %+v", list)
		}
		time.Sleep(10 * time.Millisecond)
	}
	wcancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if maxRunning != 1 {
		t.Errorf("max concurrent jobs = %d, want 1", maxRunning)
	}
	for state, want := range map[string]float64{StateSucceeded: 1, StateRejected: 1, StateFailed: 1} {
		if got := testutil.ToFloat64(m.jobs.WithLabelValues(state)); got != want {
			t.Errorf("jobs_total{%s} = %v", state, got)
		}
	}
	if n := testutil.CollectAndCount(m.steps); n != 1 {
		t.Errorf("step series = %d", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	if testutil.ToFloat64(m.alertToServing) <= 0 || testutil.ToFloat64(m.lastSuccess) <= 0 {
		t.Error("success gauges not set")
	}
	failed, _ := s.List(ctx, ListOptions{State: StateFailed})
	if len(failed) != 1 || failed[0].Reason != "trainer exited 1" {
		t.Errorf("failed = %+v", failed)
	}
}

// TestWorkerShutdown cancels the worker mid-step: the step is persisted as
// interrupted and the next start retries the job.
func (storeContract) TestWorkerShutdown(t *testing.T, newURL func(testing.TB) string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	path := newURL(t)
	s, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	w, _ := NewWorker(WorkerOptions{Store: s, Poll: 10 * time.Millisecond, LogFlush: 10 * time.Millisecond, Runner: RunnerFunc(func(ctx context.Context, job Job, rec *Recorder) error {
		return rec.Step(ctx, "train", func(ctx context.Context, log io.Writer) (string, error) {
			fmt.Fprintln(log, "epoch 1")
			close(started)
			<-ctx.Done()
			return "", ctx.Err()
		})
	})})
	j, _, _ := s.Enqueue(ctx, Request{Model: "m"})
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- w.Run(wctx) }()
	<-started
	if w.Current() != j.ID {
		t.Errorf("Current = %q", w.Current())
	}
	// The running step's log is visible before the step ends.
	for {
		got, err := s.Get(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Steps) == 1 && got.Steps[0].State == StepRunning && got.Steps[0].Log == "epoch 1\n" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("live log never saved: %+v", got.Steps)
		}
		time.Sleep(5 * time.Millisecond)
	}
	wcancel()
	<-done
	got, _ := s.Get(ctx, j.ID)
	if got.State != StateRunning || got.Steps[0].State != StepInterrupted || got.Steps[0].Log != "epoch 1\n" {
		t.Errorf("after shutdown: %+v", got)
	}
	s.Close()
	s = openStore(t, path, &clock{t: time.Now().Add(DefaultLease + time.Second)}, nil)
	rec, err := s.Recover(ctx)
	if err != nil || len(rec) != 1 || rec[0].State != StateQueued {
		t.Errorf("recover = %+v, %v", rec, err)
	}
}

func TestOpenErrors(t *testing.T) {
	for _, o := range []Options{{}, {Path: "x", Cooldown: -1}, {Path: "x", MaxAttempts: -1}, {Path: "/nonexistent/dir/jobs.db"}} {
		if s, err := Open(context.Background(), o); err == nil {
			s.Close()
			t.Errorf("Open(%+v) succeeded", o)
		}
	}
}

// TestSecondOpenRefused: a second trainer on the same job database refuses
// to start (ErrLocked) until the first closes it.
func TestSecondOpenRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	first, err := Open(context.Background(), Options{Path: path, Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	if second, err := Open(context.Background(), Options{Path: path, Exclusive: true}); !errors.Is(err, ErrLocked) {
		if second != nil {
			second.Close()
		}
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	first.Close()
	again, err := Open(context.Background(), Options{Path: path, Exclusive: true})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	again.Close()
}
