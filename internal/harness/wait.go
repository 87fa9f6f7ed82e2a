package harness

import (
	"testing"
	"time"
)

// WaitUntil polls cond every 100 ms and fails t when it does not hold within
// limit; what names the awaited state in the failure.
func WaitUntil(t testing.TB, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// NeverBlocks calls try n times (with 0 … n-1) from another goroutine and
// returns how many calls returned true. It fails t when the calls have not
// all returned within a minute: for non-blocking operations (a bounded
// queue that drops when full), where a blocked call would never return, so
// the check waits for the calls rather than timing them.
func NeverBlocks(t testing.TB, what string, n int, try func(i int) bool) (accepted int) {
	t.Helper()
	done := make(chan int)
	go func() {
		ok := 0
		for i := range n {
			if try(i) {
				ok++
			}
		}
		done <- ok
	}()
	select {
	case accepted = <-done:
		return accepted
	case <-time.After(time.Minute):
		t.Fatalf("%s blocked", what)
		return 0
	}
}
