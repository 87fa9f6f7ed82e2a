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
