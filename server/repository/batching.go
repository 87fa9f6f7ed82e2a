package repository

import (
	"context"
	"log/slog"

	"github.com/flywheel-ml/flywheel/server/batch"
	"github.com/flywheel-ml/flywheel/server/tensor"
)

// BatchWrap returns an Options.Wrap that puts a batch.Batcher in front of
// the session of every version whose config.yaml has a dynamic_batching
// block; other versions keep the session itself. The batcher is a Worker:
// the repository runs it under its Run until the version retires (it closes
// the wrapper and waits for the queue to drain, before the session) or Run
// ends. clients, when not nil, is batch.Options.Clients (the HTTP server's
// open connections).
func BatchWrap(logger *slog.Logger, clients func() int) func(string, int64, ModelConfig, Runner) Runner {
	if logger == nil {
		logger = nopLogger()
	}
	return func(model string, version int64, cfg ModelConfig, r Runner) Runner {
		if cfg.DynamicBatching == nil {
			return r
		}
		b, err := batch.New(batch.Options{Config: *cfg.DynamicBatching, Runner: r, Clients: clients,
			Logger: logger.With("model", model, "version", version)})
		if err != nil { // LoadModelConfig validated it already
			logger.Error("dynamic batching disabled", "component", "batch", "model", model, "version", version, "err", err)
			return r
		}
		return batchedRunner{b}
	}
}

// batchedRunner adapts a batch.Batcher to Runner, TimedRunner, Worker and
// io.Closer.
type batchedRunner struct{ b *batch.Batcher }

func (a batchedRunner) Run(ctx context.Context, in []tensor.Tensor) ([]tensor.Tensor, error) {
	res, err := a.b.Infer(ctx, in)
	return res.Outputs, err
}

func (a batchedRunner) RunTimed(ctx context.Context, in []tensor.Tensor) ([]tensor.Tensor, Timing, error) {
	res, err := a.b.Infer(ctx, in)
	return res.Outputs, Timing{Queue: res.Queue, Compute: res.Compute, Executions: res.Executions}, err
}

// Work runs the batcher until ctx is done or Close, then drains its queue.
func (a batchedRunner) Work(ctx context.Context) error { return a.b.Run(ctx) }

// Close stops intake; Work returns once every queued request has run.
func (a batchedRunner) Close() error {
	a.b.Close()
	return nil
}
