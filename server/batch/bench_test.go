package batch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// closedLoop sends n batch-1 requests from c goroutines, each sending its
// next request when the previous answer arrives, through run; it returns the
// wall time.
func closedLoop(tb testing.TB, run func(context.Context, []Tensor) ([]Tensor, error), in [][]Tensor, c, n int) time.Duration {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		fail atomic.Value
	)
	t0 := time.Now()
	for g := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if _, err := run(context.Background(), in[g%len(in)]); err != nil {
					fail.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := fail.Load().(error); err != nil {
		tb.Fatal(err)
	}
	return time.Since(t0)
}

func benchInputs(spec interface{ rowsOf(int) []Tensor }, k int) [][]Tensor {
	ins := make([][]Tensor, k)
	for i := range ins {
		ins[i] = spec.rowsOf(1)
	}
	return ins
}

type inputMaker struct {
	name     string
	features int
	rng      *rand.Rand
}

func (m inputMaker) rowsOf(r int) []Tensor { return request(m.name, m.features, r, m.rng) }

// BenchmarkInfer: batch-1 requests at concurrency c straight into one shared
// session (direct: what a server without a batcher does) or through the
// batcher (batched). ns/op is per request; req/s and rows/run are reported.
//
//	go test -run '^$' -bench Infer -benchtime 2s ./server/batch
func BenchmarkInfer(b *testing.B) {
	for _, model := range []string{"mlp_small", "mlp_wide"} {
		r, spec := benchModel(b, model)
		ins := benchInputs(inputMaker{spec.Input, spec.Features, rand.New(rand.NewPCG(5, 5))}, 64)
		for _, c := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("%s/direct/c=%d", model, c), func(b *testing.B) {
				d := closedLoop(b, r.Run, ins, c, b.N)
				b.ReportMetric(float64(b.N)/d.Seconds(), "req/s")
			})
			for _, bc := range benchConfigs() {
				b.Run(fmt.Sprintf("%s/%s/c=%d", model, bc.name, c), func(b *testing.B) {
					var runs atomic.Int64
					bt, err := New(Options{Config: bc.cfg, Runner: r, Observe: func(Execution) { runs.Add(1) }})
					if err != nil {
						b.Fatal(err)
					}
					ctx, cancel := context.WithCancel(context.Background())
					done := make(chan error, 1)
					go func() { done <- bt.Run(ctx) }()
					b.ResetTimer()
					d := closedLoop(b, bt.Runner().Run, ins, c, b.N)
					b.StopTimer()
					cancel()
					<-done
					b.ReportMetric(float64(b.N)/d.Seconds(), "req/s")
					b.ReportMetric(float64(b.N)/float64(max(runs.Load(), 1)), "rows/run")
				})
			}
		}
	}
}

// BenchmarkSpeedup runs direct and batched back to back, interleaved, in the
// same process for the same number of requests and reports batched req/s
// divided by direct req/s ("x"), so the ratio is not skewed by neighbours
// that come and go between separate benchmark runs.
//
//	go test -run '^$' -bench Speedup -benchtime 3x ./server/batch
func BenchmarkSpeedup(b *testing.B) {
	for _, tc := range []struct {
		model string
		n     int
	}{{"mlp_small", 20000}, {"mlp_wide", 2000}} {
		r, spec := benchModel(b, tc.model)
		ins := benchInputs(inputMaker{spec.Input, spec.Features, rand.New(rand.NewPCG(6, 6))}, 64)
		for _, bc := range benchConfigs() {
			for _, c := range []int{1, 8, 64} {
				b.Run(fmt.Sprintf("%s/%s/c=%d", tc.model, bc.name, c), func(b *testing.B) {
					bt, err := New(Options{Config: bc.cfg, Runner: r})
					if err != nil {
						b.Fatal(err)
					}
					ctx, cancel := context.WithCancel(context.Background())
					done := make(chan error, 1)
					go func() { done <- bt.Run(ctx) }()
					defer func() { cancel(); <-done }()
					var direct, batched time.Duration
					for range b.N {
						direct += closedLoop(b, r.Run, ins, c, tc.n)
						batched += closedLoop(b, bt.Runner().Run, ins, c, tc.n)
					}
					b.ReportMetric(float64(direct)/float64(batched), "x")
					b.ReportMetric(float64(b.N*tc.n)/direct.Seconds(), "direct-req/s")
					b.ReportMetric(float64(b.N*tc.n)/batched.Seconds(), "batched-req/s")
				})
			}
		}
	}
}

type benchConfig struct {
	name string
	cfg  Config
}

// benchConfigs are the batcher set-ups compared: the default (hybrid
// dispatch), hybrid with one instance, inline, and dedicated workers with
// and without OS-thread pinning.
func benchConfigs() []benchConfig {
	hybrid := DefaultConfig()
	inline := DefaultConfig()
	inline.Dispatch = DispatchInline
	workers := DefaultConfig()
	workers.Dispatch = DispatchWorkers
	workers.LockOSThread = true
	unlocked := workers
	unlocked.LockOSThread = false
	hybrid1 := hybrid
	hybrid1.Instances = 1
	return []benchConfig{{"hybrid", hybrid}, {"hybrid-1", hybrid1}, {"inline", inline}, {"workers", workers}, {"workers-unlocked", unlocked}}
}
