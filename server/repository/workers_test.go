package repository

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/batch"
	"github.com/flywheel-ml/flywheel/server/tensor"
)

// batchedRepo is a repository over fake sessions whose model m batches
// with the given dispatch.
func batchedRepo(t *testing.T, dispatch string) (*Repository, *fakeLoader, string) {
	t.Helper()
	root := t.TempDir()
	put(t, root, "m", 1, "ok")
	yaml := "dynamic_batching: {max_batch_size: 4, dispatch: " + dispatch + "}\n"
	if err := os.WriteFile(filepath.Join(root, "m", modelrepo.ConfigFile), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	fl := &fakeLoader{}
	c := DefaultConfig()
	c.Root = root
	c.RescanInterval = 0
	r, err := New(Options{Config: c, Loader: fl.load, Wrap: BatchWrap(nil, nil)})
	if err != nil {
		t.Fatal(err)
	}
	return r, fl, root
}

func infer(l *Lease) error {
	in := []tensor.Tensor{{Name: "x", DataType: tensor.FP32, Shape: []int64{1, 2}, Data: []float32{1, 2}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := l.Runner.Run(ctx, in)
	return err
}

// running is how many version workers run now.
func (r *Repository) running() int {
	r.workers.mu.Lock()
	defer r.workers.mu.Unlock()
	return len(r.workers.running)
}

// TestBatchersRunUnderRun: a batcher's goroutines belong to the
// repository's Run: a version loaded before Run is served once Run starts;
// a retired version's batcher drains and its goroutines end; when Run's
// context ends every batcher drains and Run returns after them; nothing is
// left once the repository is closed.
func TestBatchersRunUnderRun(t *testing.T) {
	for _, dispatch := range []string{batch.DispatchWorkers, batch.DispatchHybrid, batch.DispatchInline} {
		t.Run(dispatch, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			r, fl, root := batchedRepo(t, dispatch)
			if err := r.Scan(context.Background()); err != nil {
				t.Fatal(err)
			}
			l1, err := r.Acquire("m", 1)
			if err != nil {
				t.Fatal(err)
			}
			// Sent before Run: answered once Run starts the batcher.
			early := make(chan error, 1)
			go func() { early <- infer(l1) }()
			ctx, cancel := context.WithCancel(context.Background())
			runDone := make(chan error, 1)
			go func() { runDone <- r.Run(ctx) }()
			if err := <-early; err != nil {
				t.Fatalf("request sent before Run: %v", err)
			}
			l1.Release()
			// (Inline dispatch may have answered it before Run started.)
			for deadline := time.Now().Add(10 * time.Second); r.running() != 1; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d workers running, want 1", r.running())
				}
			}
			// A new version retires v1: its batcher drains and stops.
			put(t, root, "m", 2, "ok")
			if err := r.Scan(ctx); err != nil {
				t.Fatal(err)
			}
			if n := r.running(); n != 1 || fl.open() != 1 {
				t.Fatalf("after the reload: %d workers, %d sessions open; want 1, 1", n, fl.open())
			}
			l2, err := r.Acquire("m", 2)
			if err != nil {
				t.Fatal(err)
			}
			if err := infer(l2); err != nil {
				t.Fatal(err)
			}
			// The end of Run drains every batcher before Run returns.
			cancel()
			select {
			case err := <-runDone:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return")
			}
			if n := r.running(); n != 0 {
				t.Fatalf("%d workers running after Run returned", n)
			}
			if err := infer(l2); !errors.Is(err, batch.ErrClosed) {
				t.Fatalf("request after Run returned: %v, want %v", err, batch.ErrClosed)
			}
			l2.Release()
			r.Close()
			if n := fl.open(); n != 0 {
				t.Fatalf("%d sessions open after Close", n)
			}
		})
	}
}

// TestBatchersWithoutRun: a repository scanned and closed without ever
// running (a start-up that failed after the first scan) drains the batchers
// that never started instead of hanging.
func TestBatchersWithoutRun(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	r, fl, _ := batchedRepo(t, batch.DispatchWorkers)
	if err := r.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { r.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a batcher that never ran")
	}
	if n := fl.open(); n != 0 {
		t.Fatalf("%d sessions open after Close", n)
	}
}
