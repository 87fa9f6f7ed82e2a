package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/tracker"
)

// Run tags set on tracked fits.
const (
	TagModel        = "flywheel.model"
	TagAlgorithm    = "flywheel.algorithm"
	TagModelVersion = "flywheel.model_version" // the repository version Publish wrote
	// TagComparison groups the runs of one comparison of several algorithms;
	// TagSelected says whether the run's model was the one kept ("true"/"false").
	TagComparison = "flywheel.comparison"
	TagSelected   = "flywheel.selected"
)

// StepPrefix prefixes the per-iteration metrics (Progress.Metrics) in a run:
// iter_train_rmse, iter_valid_rmse at steps 1…n. The prefix keeps the curves
// apart from the final evaluation metrics (train_rmse is also the RMSE of the
// finished model on every training row, logged once).
const StepPrefix = "iter_"

// Artifact paths of a tracked fit and the registered model's path.
const (
	ArtifactDir  = "model"
	ArtifactONNX = ArtifactDir + "/" + modelrepo.ModelFile
	ArtifactCard = ArtifactDir + "/" + modelrepo.CardFile
)

// Tracking records a fit as a run of an experiment tracker (tracker/sqlite,
// tracker/mlflow or tracker/fallback).
type Tracking struct {
	Recorder tracker.Recorder
	// Kind is "mlflow" or "sqlite"; the card records it with the run id.
	Kind string
	// Experiment defaults to the model name.
	Experiment string
	// Run names the run (default "<model>-<algorithm>") and carries the
	// source (user, program, git commit) and extra tags.
	Run tracker.RunOptions
}

// StartRun starts the run of cfg's fit and points cfg at it: cfg.RunID and
// cfg.Tracker go into the card, and cfg.Progress logs every iteration's
// metrics as a step of the run (keys prefixed with StepPrefix) (after calling the Progress already set).
// Start the run before Fit: the card is built inside Fit.
func (t Tracking) StartRun(ctx context.Context, cfg *Config) (*tracker.ActiveRun, error) {
	if t.Recorder == nil {
		return nil, errors.New("train: tracking without a recorder")
	}
	exp := t.Experiment
	if exp == "" {
		exp = cfg.Name
	}
	opts := t.Run
	if opts.Name == "" {
		opts.Name = cfg.Name + "-" + cfg.Algorithm
	}
	tags := map[string]string{TagModel: cfg.Name, TagAlgorithm: cfg.Algorithm}
	for k, v := range opts.Tags {
		tags[k] = v
	}
	opts.Tags = tags
	run, err := tracker.Start(ctx, t.Recorder, exp, opts)
	if err != nil {
		return nil, fmt.Errorf("train: tracking: %w", err)
	}
	cfg.RunID, cfg.Tracker = run.ID(), t.Kind
	prev := cfg.Progress
	cfg.Progress = func(p Progress) {
		if prev != nil {
			prev(p)
		}
		m := make(map[string]float64, len(p.Metrics))
		for k, v := range p.Metrics {
			m[StepPrefix+k] = v
		}
		run.Step(ctx, int64(p.Iteration), m)
	}
	return run, nil
}

// FitTracked starts a run (StartRun), fits and returns the result with the
// still-running run: publish the result if wanted, then FinishRun. When the
// fit fails the run is ended FAILED (KILLED when ctx was cancelled).
func FitTracked(ctx context.Context, t Tracking, cfg Config) (*Result, *tracker.ActiveRun, error) {
	run, err := t.StartRun(ctx, &cfg)
	if err != nil {
		return nil, nil, err
	}
	res, err := Fit(ctx, cfg)
	if err != nil {
		return nil, nil, errors.Join(err, EndRun(ctx, run, err))
	}
	return res, run, nil
}

// EndRun ends a run that failed with cause: KILLED when the context was
// cancelled, FAILED otherwise.
func EndRun(ctx context.Context, run *tracker.ActiveRun, cause error) error {
	status := tracker.StatusFailed
	if errors.Is(cause, context.Canceled) {
		status = tracker.StatusKilled
	}
	if err := run.End(context.WithoutCancel(ctx), status); err != nil {
		return fmt.Errorf("train: ending run %s %s: %w", run.ID(), status, err)
	}
	return nil
}

// RunResult is what the run of r records when it finishes:
//   - params: the algorithm's hyper-parameters (FlatParams), algorithm, seed;
//   - metrics (at step r.Iterations): every split's metrics flattened
//     (train_mae, test_rmse, …), best_iteration (trees or epochs kept), fit_seconds;
//   - dataset inputs: the training and test ranges with their digests;
//   - artifacts model/model.onnx and model/model.json: the published files
//     when r was published (byte for byte), else the in-memory model and card;
//   - a registered version of the model (artifact path "model") with alias,
//     only when r was published; tag flywheel.model_version = r.Version.
func RunResult(r *Result, alias string) (tracker.Result, error) {
	params := FlatParams(r.Params)
	params["algorithm"] = r.Algorithm
	params["seed"] = strconv.FormatInt(r.Seed, 10)
	metrics := tracker.FlattenMetrics(r.Metrics)
	metrics["best_iteration"] = float64(r.Iterations)
	metrics["fit_seconds"] = r.FitDuration.Seconds()
	out := tracker.Result{Params: params, Metrics: metrics, FinalStep: int64(r.Iterations)}
	if c := r.Card; c != nil {
		out.Datasets = append(out.Datasets, datasetInput(c.Training.Dataset, "training"))
		if c.Training.TestDataset != nil {
			out.Datasets = append(out.Datasets, datasetInput(*c.Training.TestDataset, "testing"))
		}
	}
	if r.Dir == "" {
		if r.Card == nil {
			return out, errors.New("train: result without a card")
		}
		cardJSON, err := json.MarshalIndent(r.Card, "", "  ")
		if err != nil {
			return out, fmt.Errorf("train: encoding the card: %w", err)
		}
		out.Files = map[string][]byte{ArtifactONNX: r.ONNX, ArtifactCard: append(cardJSON, '\n')}
		return out, nil
	}
	out.Artifacts = map[string]string{
		ArtifactONNX: filepath.Join(r.Dir, modelrepo.ModelFile),
		ArtifactCard: filepath.Join(r.Dir, modelrepo.CardFile),
	}
	out.Tags = map[string]string{TagModelVersion: strconv.Itoa(r.Version)}
	out.Model, out.ModelPath, out.Alias = r.Card.Name, ArtifactDir, alias
	return out, nil
}

func datasetInput(d modelrepo.Dataset, context string) tracker.Dataset {
	if d.Name == "" {
		d.Name = "dataset"
	}
	profile, _ := json.Marshal(map[string]any{"num_rows": d.Rows, "from": d.From, "until": d.Until})
	var source []byte
	if d.Source != "" {
		source, _ = json.Marshal(map[string]string{"uri": d.Source})
	}
	return tracker.Dataset{Name: d.Name, Digest: d.Digest, SourceType: "local", Source: string(source),
		Profile: string(profile), Context: context}
}

// FinishRun logs RunResult(r, alias) and ends the run FINISHED (FAILED when
// logging fails, see tracker.ActiveRun.Finish). It returns the registered
// version (zero when r was not published).
func FinishRun(ctx context.Context, run *tracker.ActiveRun, r *Result, alias string) (tracker.ModelVersion, error) {
	res, err := RunResult(r, alias)
	if err != nil {
		return tracker.ModelVersion{}, errors.Join(err, EndRun(ctx, run, err))
	}
	mv, err := run.Finish(ctx, res)
	if err != nil {
		return mv, fmt.Errorf("train: tracking run %s: %w", run.ID(), err)
	}
	return mv, nil
}
