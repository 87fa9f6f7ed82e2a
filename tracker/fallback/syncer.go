package fallback

import (
	"context"
	"errors"
	"time"
)

// Syncer replays unsynced runs in the background of a long-running service.
type Syncer struct {
	Tracker  *Tracker
	Interval time.Duration // default 1m
	// OnSync, if set, sees every report (metrics, tests).
	OnSync func(SyncReport, error)
}

// Run syncs every Interval until ctx is done; it returns nil on shutdown.
func (s *Syncer) Run(ctx context.Context) error {
	iv := s.Interval
	if iv <= 0 {
		iv = time.Minute
	}
	tick := time.NewTicker(iv)
	defer tick.Stop()
	for {
		rep, err := s.Tracker.Sync(ctx, SyncOptions{})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			s.Tracker.log.Warn("background sync incomplete", "err", err, "runs", rep.Runs, "synced", rep.Synced)
		} else if rep.Runs > 0 {
			s.Tracker.log.Info("background sync", "runs", rep.Runs, "synced", rep.Synced)
		}
		if s.OnSync != nil {
			s.OnSync(rep, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
