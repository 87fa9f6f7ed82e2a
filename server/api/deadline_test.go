package api

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDeadlines(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
	}{{"30s", 30 * time.Second}, {"20ms", 20 * time.Millisecond}, {"odd", 7*time.Millisecond + 3}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &deadlines{timeout: tt.timeout}
			now := time.Now()
			ctx := d.context(now)
			dl, ok := ctx.Deadline()
			if want := now.Add(tt.timeout); !ok || dl.Before(want) || dl.After(want.Add(2*deadlineSlot)) {
				t.Fatalf("deadline %v (set %v), want in [%v, +%v]", dl, ok, want, 2*deadlineSlot)
			}
			if again := d.context(now); again != ctx {
				t.Errorf("a request at the same time got another context")
			}
			if later := d.context(now.Add(10 * deadlineSlot)); later == ctx {
				t.Errorf("a request ten slots later shares the context")
			}
			if tt.timeout > time.Second {
				if err := ctx.Err(); err != nil {
					t.Fatalf("ended early: %v", err)
				}
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(tt.timeout + time.Second):
				t.Fatal("context did not end")
			}
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) || time.Now().Before(now.Add(tt.timeout)) {
				t.Errorf("ended with %v at +%v, want DeadlineExceeded after %v", ctx.Err(), time.Since(now), tt.timeout)
			}
		})
	}
}

// BenchmarkInferContext: the per-request inference context, shared per
// slot against one context.WithTimeout (and its timer) per request.
func BenchmarkInferContext(b *testing.B) {
	b.Run("shared", func(b *testing.B) {
		d := &deadlines{timeout: 30 * time.Second}
		b.ReportAllocs()
		for b.Loop() {
			ctx := d.context(time.Now())
			_ = ctx.Done() // what a queued request selects on
			_ = ctx.Err()
		}
	})
	b.Run("per-request", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = ctx.Done()
			_ = ctx.Err()
			cancel()
		}
	})
}
