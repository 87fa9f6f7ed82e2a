package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Runner runs one job: it records its steps through rec and returns nil when
// the job succeeded, a *Rejection when it ended rejected, or an error when it
// failed. When ctx is cancelled (shutdown) it should return promptly.
type Runner interface {
	Run(ctx context.Context, job Job, rec *Recorder) error
}

// RunnerFunc adapts a function to Runner.
type RunnerFunc func(ctx context.Context, job Job, rec *Recorder) error

// Run calls f.
func (f RunnerFunc) Run(ctx context.Context, job Job, rec *Recorder) error { return f(ctx, job, rec) }

// Rejection ends a job in state rejected (the candidate was not good enough);
// Reason carries the figures.
type Rejection struct{ Reason string }

func (r *Rejection) Error() string { return "rejected: " + r.Reason }

// DefaultLogFlush is how often a running step's log is saved by default.
const DefaultLogFlush = 2 * time.Second

// MaxStepLog bounds the log kept per step (the tail is kept).
const MaxStepLog = 64 << 10

// Recorder records the steps of one running job.
type Recorder struct {
	store    *Store
	job      string
	metrics  *Metrics
	logger   *slog.Logger
	logFlush time.Duration // how often a running step's log is saved; 0 = only at the end
}

// Step runs fn as the step called name: it persists the start, hands fn a log
// writer (kept in the job, bounded), and persists the end with its state,
// detail and duration even when ctx was cancelled. fn's error is returned.
func (r *Recorder) Step(ctx context.Context, name string, fn func(ctx context.Context, log io.Writer) (detail string, err error)) error {
	started, err := r.store.StartStep(ctx, r.job, name)
	if err != nil {
		return err
	}
	r.logger.Info("step started", "job_id", r.job, "step", name)
	log := &tailBuffer{max: MaxStepLog}
	stopFlush := r.flushLog(ctx, name, log)
	detail, err := fn(ctx, log)
	stopFlush()
	state := StepSucceeded
	var rej *Rejection
	switch {
	case err == nil:
	case errors.As(err, &rej):
		state = StepRejected
		if detail == "" {
			detail = rej.Reason
		}
	case ctx.Err() != nil:
		state = StepInterrupted
		detail = joinDetail(detail, "interrupted: "+err.Error())
	default:
		state = StepFailed
		detail = joinDetail(detail, err.Error())
	}
	finished, ferr := r.store.FinishStep(context.WithoutCancel(ctx), r.job, name, state, detail, log.String())
	if ferr != nil {
		return errors.Join(err, ferr)
	}
	d := finished.Sub(started)
	r.metrics.observeStep(name, d)
	r.logger.Info("step finished", "job_id", r.job, "step", name, "state", state, "seconds", d.Seconds())
	return err
}

// flushLog saves the step's log every logFlush while it runs, so the job API
// shows a long training run's output live. The returned func stops it.
func (r *Recorder) flushLog(ctx context.Context, name string, log *tailBuffer) func() {
	if r.logFlush <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(r.logFlush)
		defer t.Stop()
		saved := 0
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if n := log.written(); n != saved {
				saved = n
				if err := r.store.UpdateStepLog(ctx, r.job, name, log.String()); err != nil && ctx.Err() == nil {
					r.logger.Warn("saving a step log", "job_id", r.job, "step", name, "err", err)
				}
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// Skip records a step that did not need to run (for example on a retry).
func (r *Recorder) Skip(ctx context.Context, name, detail string) error {
	if _, err := r.store.StartStep(ctx, r.job, name); err != nil {
		return err
	}
	_, err := r.store.FinishStep(context.WithoutCancel(ctx), r.job, name, StepSkipped, detail, "")
	return err
}

// Result merges figures into the job's result.
func (r *Recorder) Result(ctx context.Context, add map[string]any) error {
	return r.store.MergeResult(context.WithoutCancel(ctx), r.job, add)
}

func joinDetail(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	mu   sync.Mutex
	buf  []byte
	max  int
	lost int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
		b.lost += over
	}
	return len(p), nil
}

func (b *tailBuffer) written() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lost + len(b.buf)
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lost > 0 {
		return fmt.Sprintf("[%d earlier bytes dropped]\n%s", b.lost, b.buf)
	}
	return string(b.buf)
}

// WorkerOptions configures the worker.
type WorkerOptions struct {
	Store  *Store
	Runner Runner
	Poll   time.Duration // how often to look for work without a Wake; 1s when zero
	// LogFlush is how often a running step's log is saved (DefaultLogFlush
	// when zero, never when negative).
	LogFlush time.Duration
	Metrics  *Metrics // optional
	Logger   *slog.Logger
}

// Worker runs queued jobs one at a time.
type Worker struct {
	o    WorkerOptions
	wake chan struct{}

	mu      sync.Mutex
	current string
}

// NewWorker returns a worker; start it with Run.
func NewWorker(o WorkerOptions) (*Worker, error) {
	if o.Store == nil || o.Runner == nil {
		return nil, errors.New("jobs: worker needs a Store and a Runner")
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.LogFlush == 0 {
		o.LogFlush = DefaultLogFlush
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Worker{o: o, wake: make(chan struct{}, 1)}, nil
}

// Wake tells the worker new work may be queued.
func (w *Worker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Current returns the id of the running job, or "".
func (w *Worker) Current() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.current
}

// Run takes queued jobs one by one until ctx is done. A job interrupted by
// ctx stays running in the store with its step marked interrupted; Recover on
// the next start decides whether it is retried.
func (w *Worker) Run(ctx context.Context) error {
	t := time.NewTicker(w.o.Poll)
	defer t.Stop()
	for {
		if ctx.Err() != nil {
			return nil
		}
		job, err := w.o.Store.Claim(ctx)
		switch {
		case err == nil:
			w.runOne(ctx, job)
			continue
		case errors.Is(err, ErrNotFound):
		case ctx.Err() != nil:
			return nil
		default:
			w.o.Logger.Error("claiming a job", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
		case <-t.C:
		}
	}
}

// holdLease renews the job's lease every third of it until ctx ends; when
// the lease is lost (this trainer stalled past it and another took the job)
// it cancels the job. The returned func reports whether that happened; it
// waits for the renewer to stop, so call it after cancelling ctx.
func (w *Worker) holdLease(ctx context.Context, cancel context.CancelFunc, id string, log *slog.Logger) (lost func() bool) {
	var gone bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(w.o.Store.Lease() / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			err := w.o.Store.Renew(ctx, id)
			switch {
			case err == nil:
			case errors.Is(err, ErrLeaseLost):
				gone = true
				log.Error("lost the job's lease; stopping it", "err", err)
				cancel()
				return
			case ctx.Err() == nil:
				// The database may be back before the lease runs out.
				log.Warn("renewing the job's lease", "err", err)
			}
		}
	}()
	return func() bool { <-done; return gone }
}

func (w *Worker) runOne(ctx context.Context, job Job) {
	w.mu.Lock()
	w.current = job.ID
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.current = ""
		w.mu.Unlock()
	}()
	log := w.o.Logger.With("job_id", job.ID)
	log.Info("job started", "attempt", job.Attempt, "trigger", job.Trigger, "group_key", job.GroupKey, "owner", w.o.Store.Owner())
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lost := w.holdLease(jctx, cancel, job.ID, log)
	rec := &Recorder{store: w.o.Store, job: job.ID, metrics: w.o.Metrics, logger: w.o.Logger, logFlush: w.o.LogFlush}
	err := w.o.Runner.Run(jctx, job, rec)
	cancel()
	if lost() {
		log.Warn("job abandoned: its lease was lost, another trainer retries it", "err", err)
		return
	}
	if ctx.Err() != nil && err != nil {
		log.Warn("job interrupted by shutdown; it will be recovered on the next start (or lease expiry)", "err", err)
		return
	}
	state, reason := StateSucceeded, ""
	var rej *Rejection
	switch {
	case err == nil:
	case errors.As(err, &rej):
		state, reason = StateRejected, rej.Reason
	default:
		state, reason = StateFailed, err.Error()
	}
	done, ferr := w.o.Store.Finish(context.WithoutCancel(ctx), job.ID, state, reason)
	if ferr != nil {
		log.Error("finishing job", "err", ferr)
		return
	}
	w.o.Metrics.observeJob(done)
	log.Info("job finished", "state", state, "reason", reason)
}
