package repository

import (
	"context"
	"sync"
)

// Worker is implemented by runners with goroutines of their own (a dynamic
// batcher, see BatchWrap). When Options.Wrap returns one, the repository
// runs Work for as long as the version serves:
//
//   - Work starts when the version is loaded, under the context of the
//     repository's Run (a version loaded by a Scan before Run waits for Run
//     to start it);
//   - when the version retires, its runner's Close (io.Closer) stops intake
//     and the repository waits for Work to return (every queued request
//     answered) before it closes the session;
//   - when Run's context ends, every Work sees it, drains and returns, and
//     Run returns only after all of them have: no worker outlives Run.
//
// Work must return once ctx is done or Close was called, after finishing
// what it accepted.
type Worker interface {
	Work(ctx context.Context) error
}

// workers tracks the Work goroutines of a repository's versions.
type workers struct {
	mu sync.Mutex
	// ctx is the context of Run: nil before Run starts; after Run
	// returned it is done, so a version loaded then drains at once.
	ctx     context.Context
	pending map[*entry]bool          // loaded before Run started
	running map[*entry]chan struct{} // Work started; the channel closes when it returns
}

// start runs e's Work under Run's context, or keeps it for Run.
func (r *Repository) startWork(e *entry) {
	w := &r.workers
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx == nil {
		if w.pending == nil {
			w.pending = map[*entry]bool{}
		}
		w.pending[e] = true
		return
	}
	r.goWork(e, w.ctx)
}

// goWork starts e's Work; r.workers.mu must be held.
func (r *Repository) goWork(e *entry, ctx context.Context) {
	w := &r.workers
	if w.running == nil {
		w.running = map[*entry]chan struct{}{}
	}
	done := make(chan struct{})
	w.running[e] = done
	go func() {
		defer close(done)
		if err := e.worker.Work(ctx); err != nil {
			r.log.Warn("version worker failed", "model", e.model, "version", e.version, "err", err)
		}
		w.mu.Lock()
		delete(w.running, e)
		w.mu.Unlock()
	}()
}

// runWork starts the versions loaded before Run under ctx (Run's context).
func (r *Repository) runWork(ctx context.Context) {
	w := &r.workers
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ctx = ctx
	for e := range w.pending {
		r.goWork(e, ctx)
	}
	w.pending = nil
}

// waitWork returns once no Work runs any more; Run's context must be done,
// so every one of them is draining and later ones drain at once.
func (r *Repository) waitWork() {
	w := &r.workers
	for {
		w.mu.Lock()
		var done chan struct{}
		for _, ch := range w.running {
			done = ch
			break
		}
		w.mu.Unlock()
		if done == nil {
			return
		}
		<-done
	}
}

// stopWork waits for e's Work to return; e's runner has been closed (no
// new requests). A Work that never started (Run never ran) runs now under a
// done context, which drains what it queued.
func (r *Repository) stopWork(e *entry) {
	w := &r.workers
	w.mu.Lock()
	done, running := w.running[e]
	pending := w.pending[e]
	delete(w.pending, e)
	w.mu.Unlock()
	switch {
	case running:
		<-done
	case pending:
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := e.worker.Work(ctx); err != nil {
			r.log.Warn("version worker failed", "model", e.model, "version", e.version, "err", err)
		}
	}
}
