package batch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func forEachDispatch(t *testing.T, f func(*testing.T, string)) {
	for _, d := range []string{DispatchHybrid, DispatchInline, DispatchWorkers} {
		t.Run(d, func(t *testing.T) { f(t, d) })
	}
}

func testConfig(dispatch string, mut func(*Config)) Config {
	c := DefaultConfig()
	c.Instances = 2
	c.Dispatch = dispatch
	if mut != nil {
		mut(&c)
	}
	return c
}

// start runs b until the test ends and checks that Run returned.
func start(t *testing.T, b *Batcher, before ...func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		for _, f := range before {
			f()
		}
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

func request(name string, features int, rows int, rng *rand.Rand) []Tensor {
	d := make([]float32, rows*features)
	for i := range d {
		d[i] = rng.Float32()*4 - 2
	}
	return []Tensor{{Name: name, DataType: "FP32", Shape: []int64{int64(rows), int64(features)}, Data: d}}
}

// The batcher never changes an answer: under random concurrent traffic with
// mixed batch sizes, every output equals the one the session gives the same
// request on its own.
func TestBatchingKeepsAnswers(t *testing.T) { forEachDispatch(t, testBatchingKeepsAnswers) }

func testBatchingKeepsAnswers(t *testing.T, dispatch string) {
	for _, tc := range []struct {
		model          string
		clients, reqs  int
		maxRows, maxBS int
		instances      int
	}{
		{"mlp_small", 16, 60, 5, 64, 1},
		{"mlp_small", 32, 30, 1, 8, 1},
		{"mlp_wide", 12, 15, 4, 64, 1},
		{"mlp_small", 16, 30, 3, 16, 2},
	} {
		t.Run(fmt.Sprintf("%s/instances=%d", tc.model, tc.instances), func(t *testing.T) {
			r, spec := benchModel(t, tc.model)
			var execs, merged atomic.Int64
			var runner Runner = r
			if tc.instances == 1 {
				// A pause before each session run lets requests pile up, so
				// merged runs are certain, not left to the scheduler.
				runner = RunnerFunc(func(ctx context.Context, in []Tensor) ([]Tensor, error) {
					time.Sleep(200 * time.Microsecond)
					return r.Run(ctx, in)
				})
			}
			b, err := New(Options{Config: testConfig(dispatch, func(c *Config) { c.MaxBatchSize = tc.maxBS; c.Instances = tc.instances }), Runner: runner,
				Observe: func(e Execution) {
					execs.Add(1)
					if e.Requests > 1 {
						merged.Add(1)
					}
				}})
			if err != nil {
				t.Fatal(err)
			}
			start(t, b)

			type pair struct{ in, want []Tensor }
			work := make([][]pair, tc.clients)
			rng := rand.New(rand.NewPCG(1, uint64(len(tc.model))))
			for c := range work {
				for range tc.reqs {
					in := request(spec.Input, spec.Features, 1+rng.IntN(tc.maxRows), rng)
					want, err := r.Run(context.Background(), in)
					if err != nil {
						t.Fatal(err)
					}
					work[c] = append(work[c], pair{in, want})
				}
			}
			var wg sync.WaitGroup
			var counted atomic.Int64 // sum of Result.Executions
			errs := make(chan error, tc.clients)
			for c := range work {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i, p := range work[c] {
						res, err := b.Infer(context.Background(), p.in)
						if err != nil {
							errs <- err
							return
						}
						counted.Add(int64(res.Executions))
						if err := sameTensors(res.Outputs, p.want); err != nil {
							errs <- errorf("client %d request %d (batch of %d requests, %d rows): %v", c, i, res.BatchRequests, res.BatchRows, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			total := int64(tc.clients * tc.reqs)
			if counted.Load() != execs.Load() {
				t.Errorf("requests count %d executions, the session ran %d times", counted.Load(), execs.Load())
			}
			t.Logf("%d requests in %d session runs (%d merged)", total, execs.Load(), merged.Load())
			// With one (slowed) instance requesters queue while the session
			// runs, so merging must happen. With two, both cores may be inside
			// the session (cgo calls keep their P) and requesters only queue
			// after the runtime retakes a P; merging is likely, not certain.
			if merged.Load() == 0 && tc.instances == 1 {
				t.Errorf("no session run merged requests (%d runs for %d requests)", execs.Load(), total)
			}
		})
	}
}

func errorf(format string, a ...any) error { return errors.New(sprintf(format, a...)) }

func sameTensors(got, want []Tensor) error {
	if len(got) != len(want) {
		return errorf("%d outputs, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.DataType != w.DataType || !slices.Equal(g.Shape, w.Shape) {
			return errorf("output %d is %s %s %v, want %s %s %v", i, g.Name, g.DataType, g.Shape, w.Name, w.DataType, w.Shape)
		}
		gd, wd := g.Data.([]float32), w.Data.([]float32)
		if len(gd) != len(wd) {
			return errorf("output %s has %d values, want %d", g.Name, len(gd), len(wd))
		}
		for k := range gd {
			if gd[k] != wd[k] {
				return errorf("output %s[%d] = %v, want %v (bit-exact)", g.Name, k, gd[k], wd[k])
			}
		}
	}
	return nil
}

// gate blocks every Run until released, to hold a worker busy.
type gate struct {
	Runner
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

// newGate returns a gate; pass g.open to start so a failing test releases it.
func newGate(r Runner) *gate {
	return &gate{Runner: r, entered: make(chan struct{}, 100), release: make(chan struct{})}
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func (g *gate) Run(ctx context.Context, in []Tensor) ([]Tensor, error) {
	g.entered <- struct{}{}
	<-g.release
	return g.Runner.Run(ctx, in)
}

func TestQueueFullAndCancel(t *testing.T) { forEachDispatch(t, testQueueFullAndCancel) }

func testQueueFullAndCancel(t *testing.T, dispatch string) {
	r, spec := benchModel(t, "mlp_small")
	g := newGate(r)
	var runs atomic.Int64
	b, err := New(Options{Config: testConfig(dispatch, func(c *Config) { c.Instances = 1; c.QueueCapacity = 2; c.MaxBatchSize = 1 }),
		Runner: g, Observe: func(Execution) { runs.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	start(t, b, g.open)
	rng := rand.New(rand.NewPCG(2, 2))

	// one request holds the only worker
	in1, in2, in3 := request(spec.Input, spec.Features, 1, rng), request(spec.Input, spec.Features, 1, rng), request(spec.Input, spec.Features, 1, rng)
	busy := make(chan error, 1)
	go func() { _, err := b.Infer(context.Background(), in1); busy <- err }()
	<-g.entered

	// two fill the queue: one will be cancelled while queued, one waits
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan error, 1)
	go func() { _, err := b.Infer(ctx, in2); cancelled <- err }()
	waiting := make(chan error, 1)
	waitUntil(t, func() bool { return b.QueueLength() == 1 })
	go func() { _, err := b.Infer(context.Background(), in3); waiting <- err }()
	waitUntil(t, func() bool { return b.QueueLength() == 2 })

	if _, err := b.Infer(context.Background(), request(spec.Input, spec.Features, 1, rng)); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third queued request: err %v, want ErrQueueFull", err)
	}
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: err %v, want context.Canceled", err)
	}
	g.open()
	for name, ch := range map[string]chan error{"busy": busy, "waiting": waiting} {
		if err := <-ch; err != nil {
			t.Errorf("%s request: %v", name, err)
		}
	}
	// the cancelled request never reached the session
	if n := runs.Load(); n != 2 {
		t.Errorf("%d session runs, want 2 (the cancelled request must be skipped)", n)
	}
	// an expired context fails before queueing
	if _, err := b.Infer(ctx, request(spec.Input, spec.Features, 1, rng)); !errors.Is(err, context.Canceled) {
		t.Errorf("Infer with a cancelled context: %v", err)
	}
}

func TestCloseDrains(t *testing.T) { forEachDispatch(t, testCloseDrains) }

func testCloseDrains(t *testing.T, dispatch string) {
	r, spec := benchModel(t, "mlp_small")
	g := newGate(r)
	b, err := New(Options{Config: testConfig(dispatch, func(c *Config) { c.Instances = 1; c.MaxBatchSize = 4 }), Runner: g})
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- b.Run(context.Background()) }()
	t.Cleanup(func() { g.open(); b.Close() })

	rng := rand.New(rand.NewPCG(3, 3))
	const n = 20
	type answer struct {
		res  Result
		err  error
		want []Tensor
	}
	answers := make(chan answer, n)
	for i := range n {
		in := request(spec.Input, spec.Features, 1+i%3, rng)
		want, err := r.Run(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			res, err := b.Infer(context.Background(), in)
			answers <- answer{res, err, want}
		}()
		if i == 0 {
			<-g.entered // the worker is busy; the rest queue up
		}
	}
	waitUntil(t, func() bool { return b.QueueLength() == n-1 })
	b.Close()
	if _, err := b.Infer(context.Background(), request(spec.Input, spec.Features, 1, rng)); !errors.Is(err, ErrClosed) {
		t.Errorf("Infer after Close: %v, want ErrClosed", err)
	}
	g.open()
	for range n {
		a := <-answers
		if a.err != nil {
			t.Errorf("queued request lost on shutdown: %v", a.err)
			continue
		}
		if err := sameTensors(a.res.Outputs, a.want); err != nil {
			t.Error(err)
		}
	}
	select {
	case <-runDone:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	b.Close() // idempotent
}

// A request whose shape the model rejects is not merged with good ones: it
// fails alone, the others are answered.
func TestIncompatibleShapesRunApart(t *testing.T) { forEachDispatch(t, testIncompatibleShapesRunApart) }

func testIncompatibleShapesRunApart(t *testing.T, dispatch string) {
	r, spec := benchModel(t, "mlp_small")
	g := newGate(r)
	b, err := New(Options{Config: testConfig(dispatch, func(c *Config) { c.Instances = 1 }), Runner: g})
	if err != nil {
		t.Fatal(err)
	}
	start(t, b, g.open)
	rng := rand.New(rand.NewPCG(4, 4))
	type out struct {
		bad bool
		err error
		n   int
	}
	outs := make(chan out, 8)
	send := func(bad bool) func() {
		f := spec.Features
		if bad {
			f--
		}
		in := request(spec.Input, f, 2, rng)
		return func() {
			res, err := b.Infer(context.Background(), in)
			outs <- out{bad, err, res.BatchRequests}
		}
	}
	go send(false)()
	<-g.entered
	for i := range 6 {
		go send(i%3 == 0)()
	}
	waitUntil(t, func() bool { return b.QueueLength() == 6 })
	g.open()
	for range 7 {
		o := <-outs
		switch {
		case o.bad && o.err == nil:
			t.Error("request with 15 features succeeded")
		case !o.bad && o.err != nil:
			t.Errorf("good request failed: %v", o.err)
		case o.bad && !strings.Contains(o.err.Error(), "dimension"):
			t.Logf("bad request error: %v", o.err)
		}
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// Under concurrent traffic with random cancellations, a Close in the middle
// leaves no request hanging: each gets its correct answer, its context's
// error, ErrClosed or ErrQueueFull, and Run returns.
func TestCloseUnderLoad(t *testing.T) { forEachDispatch(t, testCloseUnderLoad) }

func testCloseUnderLoad(t *testing.T, dispatch string) {
	r, spec := benchModel(t, "mlp_small")
	b, err := New(Options{Config: testConfig(dispatch, func(c *Config) { c.QueueCapacity = 16; c.MaxBatchSize = 8 }), Runner: r})
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- b.Run(context.Background()) }()

	const clients, reqs = 24, 40
	type pair struct{ in, want []Tensor }
	work := make([][]pair, clients)
	rng := rand.New(rand.NewPCG(7, 7))
	for c := range work {
		for range reqs {
			in := request(spec.Input, spec.Features, 1+rng.IntN(3), rng)
			want, err := r.Run(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			work[c] = append(work[c], pair{in, want})
		}
	}
	var answered, cancelled, closed, full atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range work {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, p := range work[c] {
				ctx, cancel := context.WithCancel(context.Background())
				if (c+i)%5 == 0 {
					go func() { time.Sleep(time.Duration(i%3) * 20 * time.Microsecond); cancel() }()
				}
				res, err := b.Infer(ctx, p.in)
				cancel()
				switch {
				case err == nil:
					if e := sameTensors(res.Outputs, p.want); e != nil {
						errs <- e
						return
					}
					answered.Add(1)
				case errors.Is(err, context.Canceled):
					cancelled.Add(1)
				case errors.Is(err, ErrClosed):
					closed.Add(1)
				case errors.Is(err, ErrQueueFull):
					full.Add(1)
				default:
					errs <- err
					return
				}
			}
		}()
	}
	waitUntil(t, func() bool { return answered.Load() >= 20 })
	b.Close()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("requests still hanging 20 s after Close")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	select {
	case <-runDone:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	if b.QueueLength() != 0 {
		t.Errorf("queue length %d after Run returned", b.QueueLength())
	}
	t.Logf("answered %d, cancelled %d, closed %d, queue full %d", answered.Load(), cancelled.Load(), closed.Load(), full.Load())
	if closed.Load() == 0 {
		t.Log("every request was done before Close took effect")
	}
}

// TestHybridClientsBound checks that hybrid dispatch runs a request inline
// (on the caller, with no worker running) only while Clients reports at
// most Instances connected clients; beyond that it queues for the workers.
func TestHybridClientsBound(t *testing.T) {
	echo := RunnerFunc(func(_ context.Context, in []Tensor) ([]Tensor, error) { return in, nil })
	in := []Tensor{{Name: "x", DataType: "FP32", Shape: []int64{1, 2}, Data: []float32{1, 2}}}
	for _, tc := range []struct {
		name    string
		clients int
		inline  bool
	}{
		{"one client", 1, true},
		{"as many as instances", 2, true},
		{"many clients", 64, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := New(Options{Config: testConfig(DispatchHybrid, nil), Runner: echo,
				Clients: func() int { return tc.clients }})
			if err != nil {
				t.Fatal(err)
			}
			// Run is not started: only the inline path can answer.
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			_, err = b.Infer(ctx, in)
			if tc.inline && err != nil {
				t.Fatalf("want an inline answer, got %v", err)
			}
			if !tc.inline && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("want the request queued for a worker (deadline), got %v", err)
			}
		})
	}
}
