package tracker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Recorder is what a training run needs from a tracker.
type Recorder interface {
	Experiments
	RunStarter
	RunLogger
	Registry
}

// ActiveRun is a started run with convenience methods; a trainer maps its
// per-iteration callback onto Iteration and its final result onto Finish.
type ActiveRun struct {
	t    Recorder
	Info RunInfo
	now  func() time.Time

	mu      sync.Mutex
	stepErr error // first error of Step, returned by Finish
}

// Start gets or creates the experiment and starts a run in it.
func Start(ctx context.Context, t Recorder, experiment string, opts RunOptions) (*ActiveRun, error) {
	exp, err := t.GetOrCreateExperiment(ctx, experiment)
	if err != nil {
		return nil, fmt.Errorf("experiment %q: %w", experiment, err)
	}
	info, err := t.StartRun(ctx, exp.ID, opts)
	if err != nil {
		return nil, fmt.Errorf("starting run: %w", err)
	}
	return &ActiveRun{t: t, Info: info, now: time.Now}, nil
}

// ID is the run id to record (e.g. in the model card).
func (r *ActiveRun) ID() string { return r.Info.ID }

// LogParams logs params in key order.
func (r *ActiveRun) LogParams(ctx context.Context, params map[string]string) error {
	ps := make([]Param, 0, len(params))
	for _, k := range slices.Sorted(maps.Keys(params)) {
		ps = append(ps, Param{k, params[k]})
	}
	return r.t.LogBatch(ctx, r.Info.ID, nil, ps, nil)
}

// SetTags sets tags in key order.
func (r *ActiveRun) SetTags(ctx context.Context, tags map[string]string) error {
	ts := make([]Tag, 0, len(tags))
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		ts = append(ts, Tag{k, tags[k]})
	}
	return r.t.LogBatch(ctx, r.Info.ID, nil, nil, ts)
}

// LogMetrics logs values at one step, timestamped now.
func (r *ActiveRun) LogMetrics(ctx context.Context, step int64, values map[string]float64) error {
	ts := r.now().UnixMilli()
	ms := make([]Metric, 0, len(values))
	for _, k := range slices.Sorted(maps.Keys(values)) {
		ms = append(ms, Metric{Key: k, Value: values[k], Timestamp: ts, Step: step})
	}
	return r.t.LogBatch(ctx, r.Info.ID, ms, nil, nil)
}

// Iteration is one training iteration (e.g. a boosting round) with its
// metrics, such as {"train_rmse": 1.2, "valid_rmse": 1.4}.
type Iteration struct {
	Step    int64
	Metrics map[string]float64
}

// Iteration logs one iteration's metrics at its step.
func (r *ActiveRun) Iteration(ctx context.Context, it Iteration) error {
	return r.LogMetrics(ctx, it.Step, it.Metrics)
}

// Step logs one iteration from a callback that cannot return an error
// (e.g. train.Config.Progress); the first error is kept and returned by
// Finish. After an error further steps are skipped.
func (r *ActiveRun) Step(ctx context.Context, step int64, metrics map[string]float64) {
	r.mu.Lock()
	failed := r.stepErr != nil
	r.mu.Unlock()
	if failed {
		return
	}
	if err := r.LogMetrics(ctx, step, metrics); err != nil {
		r.mu.Lock()
		r.stepErr = fmt.Errorf("logging step %d: %w", step, err)
		r.mu.Unlock()
	}
}

// Result is a finished training run.
type Result struct {
	Params  map[string]string
	Metrics map[string]float64 // final metrics, e.g. test_mae; logged at FinalStep
	// FinalStep is the step of the final metrics (usually the last iteration).
	FinalStep int64
	Datasets  []Dataset
	// Artifacts maps artifact paths (e.g. "model/model.onnx") to local files.
	Artifacts map[string]string
	// Files maps artifact paths to in-memory contents.
	Files map[string][]byte
	// Tags are set on the run (e.g. the published repository version).
	Tags map[string]string
	// Model, when set, registers ModelPath (an artifact directory or file)
	// as a new version of Model and points Alias (if set) at it.
	Model     string
	ModelPath string
	Alias     string
	// ModelDescription and ModelTags describe the registered version
	// (when the recorder is a VersionAnnotator).
	ModelDescription string
	ModelTags        map[string]string
}

// Finish logs the result, ends the run FINISHED and returns the registered
// version (zero without Model). On error the run is ended FAILED.
func (r *ActiveRun) Finish(ctx context.Context, res Result) (ModelVersion, error) {
	mv, err := r.finish(ctx, res)
	if err != nil {
		return mv, errors.Join(err, r.End(context.WithoutCancel(ctx), StatusFailed))
	}
	return mv, r.End(ctx, StatusFinished)
}

func (r *ActiveRun) finish(ctx context.Context, res Result) (ModelVersion, error) {
	if err := r.Log(ctx, res); err != nil {
		return ModelVersion{}, err
	}
	if res.Model == "" {
		return ModelVersion{}, nil
	}
	mv, err := r.RegisterModel(ctx, res.Model, res.ModelPath, res.Alias)
	if err != nil {
		return mv, err
	}
	if res.ModelDescription != "" || len(res.ModelTags) > 0 {
		err = r.AnnotateVersion(ctx, mv, VersionAnnotation{Description: res.ModelDescription, Tags: res.ModelTags})
	}
	return mv, err
}

// AnnotateVersion sets a registered version's description and tags when the
// recorder keeps them (VersionAnnotator); otherwise it does nothing.
func (r *ActiveRun) AnnotateVersion(ctx context.Context, mv ModelVersion, a VersionAnnotation) error {
	va, ok := r.t.(VersionAnnotator)
	if !ok {
		return nil
	}
	if err := va.AnnotateModelVersion(ctx, mv.Name, mv.Version, a); err != nil {
		return fmt.Errorf("describing version %s of %q: %w", mv.Version, mv.Name, err)
	}
	return nil
}

// Log logs res's tags, params, metrics, datasets and artifacts (not its
// model registration) and leaves the run open.
func (r *ActiveRun) Log(ctx context.Context, res Result) error {
	r.mu.Lock()
	stepErr := r.stepErr
	r.mu.Unlock()
	if stepErr != nil {
		return stepErr
	}
	if len(res.Tags) > 0 {
		if err := r.SetTags(ctx, res.Tags); err != nil {
			return err
		}
	}
	if len(res.Params) > 0 {
		if err := r.LogParams(ctx, res.Params); err != nil {
			return err
		}
	}
	if len(res.Metrics) > 0 {
		if err := r.LogMetrics(ctx, res.FinalStep, res.Metrics); err != nil {
			return err
		}
	}
	if len(res.Datasets) > 0 {
		if err := r.t.LogInputs(ctx, r.Info.ID, res.Datasets); err != nil {
			return err
		}
	}
	for _, p := range slices.Sorted(maps.Keys(res.Artifacts)) {
		if err := r.LogArtifactFile(ctx, res.Artifacts[p], p); err != nil {
			return err
		}
	}
	for _, p := range slices.Sorted(maps.Keys(res.Files)) {
		if err := r.t.LogArtifact(ctx, r.Info.ID, p, bytes.NewReader(res.Files[p])); err != nil {
			return fmt.Errorf("artifact %s: %w", p, err)
		}
	}
	return nil
}

// LogArtifactFile uploads a local file as artifactPath.
func (r *ActiveRun) LogArtifactFile(ctx context.Context, localPath, artifactPath string) error {
	f, err := os.Open(localPath)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := r.t.LogArtifact(ctx, r.Info.ID, artifactPath, f); err != nil {
		return fmt.Errorf("artifact %s: %w", artifactPath, err)
	}
	return nil
}

// RegisterModel creates the registered model if needed, a version from the
// run's artifactPath and, when alias is set, points the alias at it.
func (r *ActiveRun) RegisterModel(ctx context.Context, name, artifactPath, alias string) (ModelVersion, error) {
	if err := r.t.CreateRegisteredModel(ctx, name); err != nil {
		return ModelVersion{}, err
	}
	mv, err := r.t.CreateModelVersion(ctx, name, r.Info.ID, strings.Trim(artifactPath, "/"))
	if err != nil {
		return ModelVersion{}, err
	}
	if alias != "" {
		if err := r.t.SetAlias(ctx, name, alias, mv.Version); err != nil {
			return mv, err
		}
		mv.Aliases = append(mv.Aliases, alias)
	}
	return mv, nil
}

// End ends the run with status.
func (r *ActiveRun) End(ctx context.Context, status RunStatus) error {
	return r.t.EndRun(ctx, r.Info.ID, status, r.now())
}

// Params renders hyper-parameters of any type as MLflow param strings.
func Params(m map[string]any) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		switch x := v.(type) {
		case string:
			out[k] = x
		case float64:
			out[k] = strconv.FormatFloat(x, 'g', -1, 64)
		case float32:
			out[k] = strconv.FormatFloat(float64(x), 'g', -1, 32)
		default:
			out[k] = fmt.Sprint(v)
		}
	}
	return out
}

// FlattenMetrics turns {"test": {"mae": 1.2}} into {"test_mae": 1.2}.
func FlattenMetrics(m map[string]map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for split, ms := range m {
		for k, v := range ms {
			out[split+"_"+k] = v
		}
	}
	return out
}
