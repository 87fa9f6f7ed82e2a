package api

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// deadlineSlot is the granularity of shared inference deadlines: a request
// ends at most two slots after its --infer-timeout.
const deadlineSlot = 5 * time.Millisecond

// deadlines hands out the inference contexts of requests: every request
// whose deadline (now + timeout, rounded up to deadlineSlot) falls in the
// same slot shares one context and its one timer. A context per request
// (context.WithTimeout) was a third of the bytes allocated per request and
// a timer added and removed per request (4 % of serve's CPU at c=64 on
// mlp_small); the shared ones cost a pointer load. Nothing cancels a shared
// context early: it ends at its deadline and is released then.
type deadlines struct {
	timeout time.Duration
	cur     atomic.Pointer[slotCtx]
	mu      sync.Mutex // serialises making the next slot's context
}

type slotCtx struct {
	slot   int64 // deadline in units of deadlineSlot since the Unix epoch
	ctx    context.Context
	cancel context.CancelFunc // called by the context's own timer at the deadline
}

// context returns a context that ends with context.DeadlineExceeded at
// now + timeout rounded up to a slot (or, when a request of a later slot
// made the current context first, one slot after that).
func (d *deadlines) context(now time.Time) context.Context {
	n := (now.Add(d.timeout).UnixNano() + int64(deadlineSlot) - 1) / int64(deadlineSlot)
	if s := d.cur.Load(); s != nil && s.slot == n {
		return s.ctx
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.cur.Load(); s != nil && (s.slot == n || s.slot == n+1) {
		return s.ctx
	}
	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, n*int64(deadlineSlot)))
	d.cur.Store(&slotCtx{slot: n, ctx: ctx, cancel: cancel})
	return ctx
}
