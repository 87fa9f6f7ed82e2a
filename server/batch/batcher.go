// Package batch is a dynamic batcher: it sits between the API handler and a
// model version's session, merges concurrent requests whose inputs have the
// same names, datatypes and trailing dimensions along dimension 0 into one
// session run, and splits the outputs back per request.
//
// Design, from measurements on the 2-vCPU machines this project targets:
//   - A worker blocks for the first request, then takes whatever else is
//     already queued (up to MaxBatchSize rows) and runs at once. It never
//     sleeps with a partial batch unless MaxQueueDelayMicroseconds asks it to:
//     Go timers cannot honour sub-millisecond waits in an idle process, and
//     under load the queue refills while the previous batch runs.
//   - Each of the Instances workers takes a whole batch, not a single job
//     (several workers pulling one job each from a channel do not batch).
//   - The queue is bounded; a full queue fails fast with ErrQueueFull.
//   - Close (or cancelling Run's context) stops intake; Run returns after the
//     workers have run every request already queued.
package batch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// ErrQueueFull is returned by Infer when the queue holds QueueCapacity
// requests; the API maps it to 503 with a Retry-After header.
var ErrQueueFull = errors.New("batch queue full")

// ErrClosed is returned by Infer after Close (the model version is unloading
// or the server is shutting down); the API maps it to 503.
var ErrClosed = errors.New("batcher closed")

// Options configure New.
type Options struct {
	Config Config
	// Runner runs the model version's session; required.
	Runner Runner
	// Logger gets rare events (unsplittable outputs); nil discards.
	Logger *slog.Logger
	// Observe, when set, is called once per session run from the worker
	// goroutine (for execution-count and compute-time metrics). Keep it cheap.
	Observe func(Execution)
	// Clients, when set, reports how many clients are connected (for the
	// HTTP server: open connections). With Dispatch "hybrid" a request then
	// runs inline only while at most Instances clients are connected, so
	// many concurrent clients always get the workers' batching. Keep it cheap
	// (an atomic load); it is called for requests that find the batcher idle.
	Clients func() int
}

// Execution describes one session run.
type Execution struct {
	Requests int           // requests merged into the run
	Rows     int           // dimension 0 of the merged inputs
	Compute  time.Duration // time inside Runner.Run
	Err      error
}

// Result is one request's answer with its timings.
type Result struct {
	Outputs []Tensor
	// Queue is the time from Infer to the start of the session run.
	Queue time.Duration
	// Compute is the session run's duration (shared by the merged requests).
	Compute time.Duration
	// BatchRequests and BatchRows describe the session run this request was in.
	BatchRequests, BatchRows int
	// Executions is 1 for exactly one request of each session run and 0 for
	// the others, so summing it over requests counts session runs.
	Executions int
}

type job struct {
	ctx      context.Context
	inputs   []Tensor
	rows     int // -1: not mergeable
	enqueued time.Time
	res      Result
	err      error
	done     chan struct{} // buffered 1
}

// Batcher merges requests for one model version. Create it with New, start
// Run in its own goroutine, submit with Infer, stop with Close or by
// cancelling Run's context.
type Batcher struct {
	cfg     Config
	runner  Runner
	logger  *slog.Logger
	observe func(Execution)
	clients func() int
	queue   chan *job
	slots   chan *worker // a token per instance; holding one = may run the session
	queued  atomic.Int64 // requests queued and not yet started
	// inflight counts Infer calls in progress (hybrid dispatch goes inline
	// only for a request that is alone)
	inflight atomic.Int64
	// lastRequests is the number of requests in the latest session run
	lastRequests atomic.Int64
	jobs         sync.Pool

	mu       sync.RWMutex // guards closed and the close of queue against sends
	closed   bool
	closeOne sync.Once
	stopped  chan struct{} // closed by Close
	ran      chan struct{} // closed when Run returns
}

// New returns a batcher; it runs nothing until Run is called.
func New(o Options) (*Batcher, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, fmt.Errorf("batch config: %w", err)
	}
	if o.Runner == nil {
		return nil, errors.New("batch: Options.Runner is required")
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	b := &Batcher{
		cfg:     o.Config,
		runner:  o.Runner,
		logger:  logger.With("component", "batch"),
		observe: o.Observe,
		clients: o.Clients,
		queue:   make(chan *job, o.Config.QueueCapacity),
		stopped: make(chan struct{}),
		ran:     make(chan struct{}),
	}
	b.jobs.New = func() any { return &job{done: make(chan struct{}, 1)} }
	b.slots = make(chan *worker, b.cfg.Instances)
	for range b.cfg.Instances {
		b.slots <- b.newWorker()
	}
	return b, nil
}

// Config returns the configuration the batcher runs with.
func (b *Batcher) Config() Config { return b.cfg }

// QueueLength returns the number of requests waiting for a session run (for
// a queue-length gauge).
func (b *Batcher) QueueLength() int { return int(b.queued.Load()) }

// Runner returns the batcher as a Runner (outputs only), so it can stand
// wherever the session stood.
func (b *Batcher) Runner() Runner {
	return RunnerFunc(func(ctx context.Context, in []Tensor) ([]Tensor, error) {
		r, err := b.Infer(ctx, in)
		return r.Outputs, err
	})
}

// Infer queues one request and waits for its outputs. It fails fast with
// ErrQueueFull or ErrClosed, and returns ctx.Err() when ctx ends first (a
// request still queued is then dropped, one already running finishes and its
// answer is discarded). The returned output Data may share memory with other
// requests' outputs of the same run; treat it as read-only.
func (b *Batcher) Infer(ctx context.Context, inputs []Tensor) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	j := b.jobs.Get().(*job)
	j.ctx, j.inputs, j.rows, j.enqueued = ctx, inputs, rows(inputs), time.Now()

	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		b.release(j)
		return Result{}, ErrClosed
	}
	alone := b.inflight.Add(1) == 1
	defer b.inflight.Add(-1)
	if b.cfg.Dispatch == DispatchHybrid && alone && b.lastRequests.Load() <= 1 &&
		(b.clients == nil || b.clients() <= b.cfg.Instances) {
		// Low load (no other request in the batcher, and the last session
		// run served a single request): run here, on the caller's
		// goroutine, without waking a worker thread. Under load the workers
		// form batches of several requests and this path stays off until
		// they shrink back to one. (Going inline whenever the queue is
		// merely empty defeated batching: measured over HTTP at c=64, 1-4
		// rows per run instead of 8-15. Even "alone" is often true at c=64
		// on two cores, where requests are parsed one after another: hence
		// the Clients bound.)
		select {
		case w := <-b.slots:
			b.mu.RUnlock()
			b.queued.Add(1) // execute counts it out
			b.runFrom(w, j)
			b.slots <- w
			<-j.done
			return b.finish(j)
		default:
		}
	}
	// queued counts requests in the channel and those a worker has taken
	// but not started (waiting for a slot or collecting its batch), so the
	// capacity check is exact and the channel, as large, never blocks.
	if b.queued.Add(1) > int64(b.cfg.QueueCapacity) {
		b.queued.Add(-1)
		b.mu.RUnlock()
		b.release(j)
		return Result{}, ErrQueueFull
	}
	b.queue <- j
	b.mu.RUnlock()

	if b.cfg.Dispatch == DispatchInline {
		// Inline dispatch: while this request is unanswered, take a free
		// slot whenever there is one and run a batch from the queue here.
		// At low concurrency the request runs on the caller's goroutine with
		// no hand-off to another thread; under load the slot holder runs
		// everyone's queued requests in one session run.
		for {
			select {
			case <-j.done:
				return b.finish(j)
			default:
			}
			select {
			case <-j.done:
				return b.finish(j)
			case w := <-b.slots:
				b.lead(w)
				b.slots <- w
			case <-ctx.Done():
				return Result{}, ctx.Err()
			}
		}
	}
	select {
	case <-j.done:
		return b.finish(j)
	case <-ctx.Done():
		// The worker still owns j and will signal done into the buffer; j is
		// not returned to the pool.
		return Result{}, ctx.Err()
	}
}

func (b *Batcher) finish(j *job) (Result, error) {
	res, err := j.res, j.err
	b.release(j)
	return res, err
}

func (b *Batcher) release(j *job) {
	*j = job{done: j.done}
	b.jobs.Put(j)
}

// Close stops intake: later Infer calls fail with ErrClosed; requests already
// queued still run. Run returns once they have. Close is idempotent.
func (b *Batcher) Close() {
	b.closeOne.Do(func() {
		b.mu.Lock()
		b.closed = true
		close(b.queue)
		b.mu.Unlock()
		close(b.stopped)
	})
}

// Wait blocks until Run has returned (after Close, every queued request has
// then been answered). Call it only when Run was started.
func (b *Batcher) Wait() { <-b.ran }

// Run blocks until Close is called or ctx is done, then drains the queue
// (every queued request is run and answered) and returns nil. Call it once. With Dispatch
// "workers" or "hybrid" it also runs the Instances worker goroutines.
func (b *Batcher) Run(ctx context.Context) error {
	defer close(b.ran)
	var wg sync.WaitGroup
	if b.cfg.Dispatch != DispatchInline {
		for range b.cfg.Instances {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b.work()
			}()
		}
	}
	select {
	case <-ctx.Done():
		b.Close()
	case <-b.stopped:
	}
	wg.Wait()
	// Inline dispatch: requests whose callers gave up may still be queued;
	// run them so the queue ends empty. Then wait for every slot holder.
	w := <-b.slots
	for b.lead(w) {
	}
	b.slots <- w
	held := make([]*worker, 0, b.cfg.Instances)
	for range b.cfg.Instances {
		held = append(held, <-b.slots)
	}
	for _, w := range held {
		b.slots <- w
	}
	return nil
}

// work is one worker goroutine (Dispatch "workers", "hybrid"): take a batch, run it,
// repeat until the queue is closed and empty.
func (b *Batcher) work() {
	if b.cfg.LockOSThread {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	for {
		j, ok := <-b.queue
		if !ok {
			return
		}
		if b.cfg.MaxBatchSize > 1 && len(b.queue) == 0 {
			// Requesters woken by the previous batch's answers are runnable
			// but have not enqueued yet: this goroutine was handed the first
			// job directly and would run ahead of them. Yield once so they can.
			runtime.Gosched()
		}
		w := <-b.slots
		b.runFrom(w, j)
		b.slots <- w
	}
}

// lead runs at most one batch taken from the queue with w (Dispatch
// "inline": the caller's goroutine does the work). It reports whether the
// queue gave it anything.
func (b *Batcher) lead(w *worker) bool {
	var j *job
	select {
	case j = <-b.queue:
	default:
	}
	if j == nil {
		return false
	}
	b.runFrom(w, j)
	return true
}

// runFrom collects a batch that starts with first from what is queued (up to
// MaxBatchSize rows, waiting at most MaxQueueDelay for more) and runs it; a
// job that did not fit starts the next batch.
func (b *Batcher) runFrom(w *worker, first *job) {
	for first != nil {
		w.batch = append(w.batch[:0], first)
		n := max(first.rows, 1)
		var carry *job
	fill:
		for first.rows > 0 && n < b.cfg.MaxBatchSize {
			var (
				j  *job
				ok bool
			)
			select {
			case j, ok = <-b.queue:
			default:
				wait := b.cfg.MaxQueueDelay() - time.Since(first.enqueued)
				if wait <= 0 {
					break fill
				}
				if w.timer == nil {
					w.timer = time.NewTimer(wait)
				} else {
					w.timer.Reset(wait)
				}
				select {
				case j, ok = <-b.queue:
					w.timer.Stop()
				case <-w.timer.C:
					break fill
				}
			}
			if !ok {
				break
			}
			if j.rows > 0 && n+j.rows > b.cfg.MaxBatchSize {
				carry = j
				break
			}
			w.batch = append(w.batch, j)
			n += max(j.rows, 1)
		}
		w.execute(w.batch)
		first = carry
	}
}

// worker holds one executor's reusable state: a slot token in inline
// dispatch, a goroutine's locals in worker dispatch.
type worker struct {
	b       *Batcher
	scratch scratch
	batch   []*job
	group   []*job
	parts   []any
	timer   *time.Timer
}

func (b *Batcher) newWorker() *worker {
	return &worker{b: b, batch: make([]*job, 0, min(b.cfg.MaxBatchSize, 256))}
}

// execute runs one batch: jobs whose context ended are answered with its
// error; the rest are grouped by compatibility and each group runs once.
func (w *worker) execute(batch []*job) {
	start := time.Now()
	w.b.queued.Add(-int64(len(batch)))
	live := batch[:0]
	for _, j := range batch {
		if err := j.ctx.Err(); err != nil {
			j.err = err
			j.done <- struct{}{}
			continue
		}
		j.res.Queue = start.Sub(j.enqueued)
		live = append(live, j)
	}
	for len(live) > 0 {
		head := live[0]
		w.group = append(w.group[:0], head)
		rest := live[1:1]
		for _, j := range live[1:] {
			if head.rows > 0 && j.rows > 0 && compatible(head.inputs, j.inputs) {
				w.group = append(w.group, j)
			} else {
				rest = append(rest, j)
			}
		}
		w.runGroup(w.group)
		live = rest
	}
}

func (w *worker) runGroup(g []*job) {
	if len(g) == 1 {
		w.runOne(g[0])
		return
	}
	total := 0
	for _, j := range g {
		total += j.rows
	}
	head := g[0].inputs
	merged := make([]Tensor, len(head))
	for i, t := range head {
		w.parts = w.parts[:0]
		elems := 0
		for _, j := range g {
			d := j.inputs[i].Data
			w.parts = append(w.parts, d)
			elems += max(dataLen(d), 0)
		}
		data, err := w.scratch.concat(w.parts, elems)
		if err != nil {
			w.fail(g, err)
			return
		}
		shape := make([]int64, len(t.Shape))
		copy(shape, t.Shape)
		shape[0] = int64(total)
		merged[i] = Tensor{Name: t.Name, DataType: t.DataType, Shape: shape, Data: data}
	}
	t0 := time.Now()
	outs, err := w.b.runner.Run(context.WithoutCancel(g[0].ctx), merged)
	compute := time.Since(t0)
	w.report(Execution{Requests: len(g), Rows: total, Compute: compute, Err: err})
	if err != nil {
		w.fail(g, err)
		return
	}
	if !splittable(outs, total) {
		// An output without a per-row leading dimension (a scalar, a
		// sequence of maps, ...): answer each request on its own so the
		// batcher never changes an answer.
		w.b.logger.Warn("outputs cannot be split along dimension 0; running requests one by one", "requests", len(g))
		for _, j := range g {
			w.runOne(j)
		}
		return
	}
	off := 0
	for _, j := range g {
		res := make([]Tensor, len(outs))
		for k, o := range outs {
			per := dataLen(o.Data) / total
			d, _ := sliceData(o.Data, off*per, (off+j.rows)*per)
			shape := make([]int64, len(o.Shape))
			copy(shape, o.Shape)
			shape[0] = int64(j.rows)
			res[k] = Tensor{Name: o.Name, DataType: o.DataType, Shape: shape, Data: d}
		}
		j.res.Outputs, j.res.Compute = res, compute
		j.res.BatchRequests, j.res.BatchRows = len(g), total
		if off == 0 {
			j.res.Executions = 1
		}
		off += j.rows
		j.done <- struct{}{}
	}
}

func splittable(outs []Tensor, total int) bool {
	for _, o := range outs {
		if len(o.Shape) == 0 || o.Shape[0] != int64(total) {
			return false
		}
		n := dataLen(o.Data)
		if n < 0 || n%total != 0 {
			return false
		}
	}
	return true
}

func (w *worker) runOne(j *job) {
	t0 := time.Now()
	outs, err := w.b.runner.Run(j.ctx, j.inputs)
	compute := time.Since(t0)
	rows := max(j.rows, 1)
	w.report(Execution{Requests: 1, Rows: rows, Compute: compute, Err: err})
	j.res.Outputs, j.res.Compute, j.err = outs, compute, err
	j.res.BatchRequests, j.res.BatchRows, j.res.Executions = 1, rows, 1
	j.done <- struct{}{}
}

func (w *worker) fail(g []*job, err error) {
	for _, j := range g {
		j.err = err
		j.done <- struct{}{}
	}
}

func (w *worker) report(e Execution) {
	if int64(e.Requests) != w.b.lastRequests.Load() {
		w.b.lastRequests.Store(int64(e.Requests))
	}
	if w.b.observe != nil {
		w.b.observe(e)
	}
}
