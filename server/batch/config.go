package batch

import (
	"fmt"
	"runtime"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the dynamic batching configuration of one model (the
// `dynamic_batching:` block of models/<name>/config.yaml). Names follow
// Triton's model configuration where one exists.
type Config struct {
	// MaxBatchSize is the most rows (dimension 0) merged into one session run.
	// A single request larger than this runs alone, unsplit. 1 disables merging
	// but keeps the queue (bounded concurrency, 503 when full).
	MaxBatchSize int `yaml:"max_batch_size"`
	// MaxQueueDelayMicroseconds is how long a worker holding a partial batch
	// waits for more requests to arrive. 0 (the default) never waits: a worker
	// takes what is already queued and runs it. On the 2-vCPU machines this
	// project is measured on, Go timers cannot honour sub-millisecond waits in
	// an idle process (200 µs became ~1.5 ms), and under closed-loop load the
	// queue fills while the previous batch runs, so waiting only adds latency.
	MaxQueueDelayMicroseconds int64 `yaml:"max_queue_delay_microseconds"`
	// QueueCapacity bounds the requests waiting for a worker; when it is full,
	// Infer fails fast with ErrQueueFull (the API answers 503 + Retry-After).
	QueueCapacity int `yaml:"queue_capacity"`
	// Instances is the number of workers, i.e. concurrent session runs for the
	// model (Triton's instance_group count). Each worker takes a whole batch
	// from the queue, never a single job, so workers do not starve each other
	// of batch rows.
	Instances int `yaml:"instances"`
	// Dispatch chooses who runs session calls; Instances bounds how many run
	// at once in every mode.
	//   "workers": Instances dedicated goroutines take batches off
	//     the queue. Smoke runs over HTTP at c=64 (shared 2-vCPU VM): 7-9 rows
	//     per session run.
	//   "inline": no goroutines; waiting requesters take turns holding an
	//     instance slot, each running everything queued at that moment on its
	//     own goroutine (no thread hand-off at low load).
	//   "hybrid" (default): workers, but at low load (a request alone in the
	//     batcher while the latest session run served one request, and at
	//     most Instances clients connected when Options.Clients is set) it
	//     runs at once on the caller's goroutine. On these VMs every
	//     goroutine hand-off to a sleeping thread costs ~0.1 ms (vCPU
	//     wake-up), which is most of a request at concurrency 1: hybrid
	//     doubles c=1 req/s; without the Clients bound it batched less at
	//     c=64 (20-25 % fewer req/s), with it c=64 matches "workers".
	Dispatch string `yaml:"dispatch"`
	// LockOSThread pins each worker goroutine to its OS thread (default
	// off). Measured here: with two workers it helped at GOMAXPROCS=2; with
	// the default single worker it costs throughput; at GOMAXPROCS=1 it
	// collapses it.
	LockOSThread bool `yaml:"lock_os_thread"`
}

// Dispatch modes.
const (
	DispatchHybrid  = "hybrid"
	DispatchInline  = "inline"
	DispatchWorkers = "workers"
)

// DefaultConfig returns the defaults tuned for a small CPU box: batches of up
// to 64 rows, no idle waiting, 1024 queued requests, one worker per two
// usable CPUs (at least one, at most 4), no OS-thread pinning, and hybrid
// dispatch.
//
// Why no pinning: with one worker, pinning it cost every batch a hand-off of
// the P to and from the locked thread (startlockedm/stoplockedm, ~4 % of CPU)
// and wake-ups of the handlers on other threads; measured over HTTP at c=64,
// four interleaved rounds, unpinned gave 1.2-1.5x the req/s on mlp_small and
// 1.04-1.25x on mlp_wide with lower p99. (With two workers pinning had
// measured better, on a busier host.)
//
// Why hybrid: with the HTTP server's open connections as Options.Clients,
// it runs a request inline only while few clients are connected, and is
// the workers' batching otherwise. Measured over HTTP on a 2-vCPU VM
// (interleaved, mlp_small): c=1 2.0-2.2x the req/s of "workers", c=64 the
// same within noise (-4 % and +23 % in two rounds).
//
// Why half the CPUs: the workers run the model, the other CPUs parse and
// answer HTTP. Measured over HTTP at concurrency 64 on a 2-vCPU VM, one
// worker instead of two made mlp_wide (compute-bound) 1.3-1.5x faster —
// with two workers the session runs took both cores, requests were parsed
// slowly, batches stayed at 2-4 rows and each row cost the batch-1 price —
// and left mlp_small as fast at less CPU per request.
func DefaultConfig() Config {
	procs := runtime.GOMAXPROCS(0)
	return Config{
		MaxBatchSize:              64,
		MaxQueueDelayMicroseconds: 0,
		QueueCapacity:             1024,
		Instances:                 min(max(procs/2, 1), 4),
		Dispatch:                  DispatchHybrid,
		LockOSThread:              false,
	}
}

// MaxQueueDelay returns MaxQueueDelayMicroseconds as a duration.
func (c Config) MaxQueueDelay() time.Duration {
	return time.Duration(c.MaxQueueDelayMicroseconds) * time.Microsecond
}

// Validate reports the first invalid field, naming its key and value.
func (c Config) Validate() error {
	switch {
	case c.MaxBatchSize < 1 || c.MaxBatchSize > 1<<16:
		return fmt.Errorf("max_batch_size must be between 1 and 65536, got %d", c.MaxBatchSize)
	case c.MaxQueueDelayMicroseconds < 0 || c.MaxQueueDelayMicroseconds > 10_000_000:
		return fmt.Errorf("max_queue_delay_microseconds must be between 0 and 10000000, got %d", c.MaxQueueDelayMicroseconds)
	case c.QueueCapacity < 1 || c.QueueCapacity > 1<<20:
		return fmt.Errorf("queue_capacity must be between 1 and 1048576, got %d", c.QueueCapacity)
	case c.Instances < 1 || c.Instances > 256:
		return fmt.Errorf("instances must be between 1 and 256, got %d", c.Instances)
	case c.Dispatch != DispatchHybrid && c.Dispatch != DispatchInline && c.Dispatch != DispatchWorkers:
		return fmt.Errorf("dispatch must be %q, %q or %q, got %q", DispatchHybrid, DispatchInline, DispatchWorkers, c.Dispatch)
	}
	return nil
}

// UnmarshalYAML presets DefaultConfig, so a `dynamic_batching:` block names
// only what it changes, then validates.
func (c *Config) UnmarshalYAML(value *yaml.Node) error {
	*c = DefaultConfig()
	// Node.Decode does not inherit the outer decoder's KnownFields, so
	// check keys here: the model configuration is strict.
	if value.Kind == yaml.MappingNode {
		known := map[string]bool{"max_batch_size": true, "max_queue_delay_microseconds": true,
			"queue_capacity": true, "instances": true, "dispatch": true, "lock_os_thread": true}
		for i := 0; i+1 < len(value.Content); i += 2 {
			if k := value.Content[i].Value; !known[k] {
				return fmt.Errorf("line %d: unknown key %q in dynamic_batching", value.Content[i].Line, k)
			}
		}
	}
	type plain Config
	if err := value.Decode((*plain)(c)); err != nil {
		return err
	}
	return c.Validate()
}
