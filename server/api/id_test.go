package api

import (
	"testing"
	"time"
)

// TestNewIDSortsByTime: ids made in later milliseconds sort after earlier
// ones (string order), whatever their random parts, for centuries.
func TestNewIDSortsByTime(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 23, 0, 0, 0, time.UTC)
	times := []time.Time{t0, t0.Add(time.Millisecond), t0.Add(time.Second), t0.AddDate(1, 0, 0), t0.AddDate(300, 0, 0)}
	prev := ""
	for _, tm := range times {
		for range 50 {
			id := newID(tm)
			if len(id) != 36 {
				t.Fatalf("id %q: want 36 characters", id)
			}
			if prev != "" && id <= prev {
				t.Fatalf("id %q at %s does not sort after %q", id, tm, prev)
			}
		}
		prev = newID(tm)
	}
}
