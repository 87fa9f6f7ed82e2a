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
	"github.com/flywheel-ml/flywheel/tracker/mlmodel"
	"github.com/flywheel-ml/flywheel/tracker/mlmodel/fromcard"
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
	// ArtifactReport is the evaluation report: metrics with the baselines and
	// the backtest, the interval and permutation importance.
	ArtifactReport = "report.json"
)

// Tracking records a fit as a run of an experiment tracker (tracker/localstore,
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

// Run and model version tags of a published fit.
const (
	// TagLogModelHistory is MLflow's tag listing the models logged in a
	// run; the runs table's Models column reads it.
	TagLogModelHistory = mlmodel.TagHistory
	// TagDatasetSHA256 is the full content hash of the training rows (the
	// dataset input's digest is MLflow's 8-character form).
	TagDatasetSHA256 = "flywheel.dataset_sha256"
	// Model version tags.
	VersionTagAlgorithm  = "algorithm"
	VersionTagRepository = "repository_version"
	VersionTagDigest     = "dataset_digest"
	VersionTagTestMAE    = "test_mae"
	VersionTagRunTracker = "tracker"
)

// RunResult is what the run of r records when it finishes:
//   - params: the algorithm's hyper-parameters (FlatParams), algorithm, seed;
//   - metrics (at step r.Iterations): every split's metrics flattened
//     (train_mae, test_rmse, …), best_iteration (trees or epochs kept), fit_seconds;
//   - dataset inputs: the training and test ranges with MLflow-style digests,
//     the columns as an mlflow_colspec schema and a profile (rows, dates,
//     the full sha256);
//   - the MLflow Model under model/: model.onnx, MLmodel, input example,
//     requirements.txt, python_env.yaml, conda.yaml, and the card model.json
//     (the published files byte for byte when r was published), with the
//     mlflow.log-model.history tag;
//   - a registered version of the model (artifact path "model") with alias,
//     description and tags, only when r was published; tag
//     flywheel.model_version = r.Version.
func RunResult(r *Result, runID, alias string) (tracker.Result, error) {
	out, err := runLog(r, runID)
	if err != nil {
		return out, err
	}
	if r.Dir == "" {
		cardJSON, err := json.MarshalIndent(r.Card, "", "  ")
		if err != nil {
			return out, fmt.Errorf("train: encoding the card: %w", err)
		}
		out.Files[ArtifactCard] = append(cardJSON, '\n')
		return out, nil
	}
	out.Artifacts = map[string]string{
		ArtifactONNX: filepath.Join(r.Dir, modelrepo.ModelFile),
		ArtifactCard: filepath.Join(r.Dir, modelrepo.CardFile),
	}
	delete(out.Files, ArtifactONNX)
	out.Tags[TagModelVersion] = strconv.Itoa(r.Version)
	out.Model, out.ModelPath, out.Alias = r.Card.Name, ArtifactDir, alias
	out.ModelDescription, out.ModelTags = VersionAnnotation(r)
	return out, nil
}

// runLog is everything of r's run but the card and the registration.
func runLog(r *Result, runID string) (tracker.Result, error) {
	if r.Card == nil {
		return tracker.Result{}, errors.New("train: result without a card")
	}
	params := FlatParams(r.Params)
	params["algorithm"] = r.Algorithm
	params["seed"] = strconv.FormatInt(r.Seed, 10)
	metrics := tracker.FlattenMetrics(r.Metrics)
	metrics["best_iteration"] = float64(r.Iterations)
	metrics["fit_seconds"] = r.FitDuration.Seconds()
	out := tracker.Result{Params: params, Metrics: metrics, FinalStep: int64(r.Iterations), Tags: map[string]string{}}
	c := r.Card
	out.Datasets = append(out.Datasets, datasetInput(c.Training.Dataset, c, "training"))
	if c.Training.TestDataset != nil {
		out.Datasets = append(out.Datasets, datasetInput(*c.Training.TestDataset, c, "testing"))
	}
	if d := c.Training.Dataset.Digest; d != "" {
		out.Tags[TagDatasetSHA256] = d
	}
	m, err := MLflowModel(r, runID)
	if err != nil {
		return out, err
	}
	files, err := m.Files()
	if err != nil {
		return out, err
	}
	out.Files = map[string][]byte{ArtifactONNX: r.ONNX}
	for name, b := range files {
		out.Files[ArtifactDir+"/"+name] = b
	}
	hist, err := m.HistoryTag()
	if err != nil {
		return out, err
	}
	out.Tags[TagLogModelHistory] = hist
	report, err := json.MarshalIndent(map[string]any{"algorithm": r.Algorithm, "metrics": r.Metrics,
		"interval": c.Interval, "importance": r.Importance, "selection": c.Training.Selection}, "", "  ")
	if err != nil {
		return out, fmt.Errorf("train: encoding the report: %w", err)
	}
	out.Files[ArtifactReport] = append(report, '\n')
	return out, nil
}

// VersionAnnotation is the registered version's description and tags:
// algorithm, repository version, training dataset digest, test MAE.
func VersionAnnotation(r *Result) (string, map[string]string) {
	tags := map[string]string{VersionTagAlgorithm: r.Algorithm}
	if r.Version > 0 {
		tags[VersionTagRepository] = strconv.Itoa(r.Version)
	}
	mae, hasMAE := r.Metrics["test"]["mae"]
	if hasMAE {
		tags[VersionTagTestMAE] = strconv.FormatFloat(mae, 'g', 6, 64)
	}
	desc := fmt.Sprintf("%s trained by %s", r.Algorithm, r.Card.Training.TrainerVersion)
	if d := r.Card.Training.Dataset; d.Digest != "" {
		tags[VersionTagDigest] = d.Digest
		desc += fmt.Sprintf(" on %s %s…%s (%d rows)", d.Name, d.From, d.Until, d.Rows)
	}
	if hasMAE {
		desc += fmt.Sprintf("; test MAE %.4f", mae)
	}
	if r.Version > 0 {
		desc += fmt.Sprintf("; repository version %d", r.Version)
	}
	return desc, tags
}

// MLflowModel describes r's graph as an MLflow Model logged in runID.
func MLflowModel(r *Result, runID string) (mlmodel.Model, error) {
	return fromcard.Model(r.Card, r.ONNX, runID, ArtifactDir)
}

// datasetInput is a card dataset as MLflow records it: an MLflow-style
// 8-character digest, the source, the columns as an mlflow_colspec schema
// (date, the features, the target) and a profile with the rows, the date
// range and the full sha256.
func datasetInput(d modelrepo.Dataset, c *modelrepo.Card, context string) tracker.Dataset {
	if d.Name == "" {
		d.Name = "dataset"
	}
	profile, _ := json.Marshal(map[string]any{"num_rows": d.Rows, "from": d.From, "until": d.Until, "sha256": d.Digest})
	uri := d.Source
	if uri == "" {
		uri = d.Name
	}
	source, _ := json.Marshal(map[string]string{"uri": uri})
	cols := []tracker.Column{{Name: "date", Type: "datetime"}}
	for _, f := range c.FeatureNames() {
		cols = append(cols, tracker.Column{Name: f, Type: "double"})
	}
	if c.Target != "" {
		cols = append(cols, tracker.Column{Name: c.Target, Type: "double"})
	}
	return tracker.Dataset{Name: d.Name, Digest: tracker.ShortDigest(d.Digest), SourceType: "local", Source: string(source),
		Schema: tracker.ColSpecSchema(cols), Profile: string(profile), Context: context}
}

// FinishRun logs RunResult(r, alias) and ends the run FINISHED (FAILED when
// logging fails, see tracker.ActiveRun.Finish). It returns the registered
// version (zero when r was not published). A result to publish goes through
// PublishTracked instead, which numbers the repository version after the
// registry's.
func FinishRun(ctx context.Context, run *tracker.ActiveRun, r *Result, alias string) (tracker.ModelVersion, error) {
	res, err := RunResult(r, run.ID(), alias)
	if err != nil {
		return tracker.ModelVersion{}, errors.Join(err, EndRun(ctx, run, err))
	}
	mv, err := run.Finish(ctx, res)
	if err != nil {
		return mv, fmt.Errorf("train: tracking run %s: %w", run.ID(), err)
	}
	return mv, nil
}

// Published is what PublishTracked did.
type Published struct {
	Version int    // repository version
	Dir     string // models/<name>/<version>
	// Registered is the registry's version (its number is Version unless
	// the repository had that directory already).
	Registered tracker.ModelVersion
	// Unsynced is set when the run is complete only in the local store
	// (MLflow unreachable); `flywheel runs sync` replays it.
	Unsynced bool
	// TrackErr is a tracking failure after the model was published (the
	// card upload, version tags, alias or the run's end): the model is
	// served, the run may be incomplete and the caller reports it without
	// failing.
	TrackErr error
}

// mirrorReporter is implemented by tracker/fallback: whether a run is still
// being written to MLflow.
type mirrorReporter interface {
	Mirrored(ctx context.Context, runID string) (bool, error)
}

// PublishTracked records r in run, registers its version and publishes it
// under the registry's version number, in an order that never publishes a
// half-tracked model:
//
//  1. params, metrics, datasets and the MLflow Model files (model/model.onnx,
//     MLmodel, …) are logged; the version is registered (no alias yet);
//  2. r is published as repository version = the registry's number (the
//     next free one if that is taken; the card records both);
//  3. the card (byte for byte the published model.json) is uploaded, the
//     version gets its description and tags, alias moves to it and the run
//     ends FINISHED.
//
// A failure in 1 or 2 ends the run FAILED and publishes nothing (the error
// says what the tracker answered). A failure in 3 is Published.TrackErr: the
// model is published either way.
func PublishTracked(ctx context.Context, t Tracking, run *tracker.ActiveRun, repoDir string, r *Result, alias string) (Published, error) {
	var pub Published
	fail := func(err error) (Published, error) {
		return pub, errors.Join(fmt.Errorf("train: tracking run %s: %w", run.ID(), err), EndRun(ctx, run, err))
	}
	res, err := runLog(r, run.ID())
	if err != nil {
		return fail(err)
	}
	if err := run.Log(ctx, res); err != nil {
		return fail(err)
	}
	name := r.Card.Name
	mv, err := run.RegisterModel(ctx, name, ArtifactDir, "")
	if err != nil {
		return fail(err)
	}
	pub.Registered = mv
	want, _ := strconv.Atoi(mv.Version)
	r.Card.Training.RegistryVersion = mv.Version
	if mr, ok := t.Recorder.(mirrorReporter); ok {
		if mirrored, err := mr.Mirrored(ctx, run.ID()); err == nil && !mirrored {
			pub.Unsynced = true
			r.Card.Training.TrackerState = "unsynced"
		}
	}
	v, dir, err := PublishVersion(repoDir, name, r, want)
	if err != nil {
		return fail(err)
	}
	pub.Version, pub.Dir = v, dir

	// Published: from here on nothing fails the caller.
	var errs []error
	if err := run.LogArtifactFile(ctx, filepath.Join(dir, modelrepo.CardFile), ArtifactCard); err != nil {
		errs = append(errs, err)
	}
	if err := run.SetTags(ctx, map[string]string{TagModelVersion: strconv.Itoa(v)}); err != nil {
		errs = append(errs, err)
	}
	desc, tags := VersionAnnotation(r)
	if err := run.AnnotateVersion(ctx, mv, tracker.VersionAnnotation{Description: desc, Tags: tags}); err != nil {
		errs = append(errs, err)
	}
	if alias != "" {
		if err := t.Recorder.SetAlias(ctx, name, alias, mv.Version); err != nil {
			errs = append(errs, fmt.Errorf("alias %s: %w", alias, err))
		} else {
			pub.Registered.Aliases = append(pub.Registered.Aliases, alias)
		}
	}
	status := tracker.StatusFinished
	if len(errs) > 0 {
		status = tracker.StatusFailed
	}
	if err := run.End(context.WithoutCancel(ctx), status); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		pub.TrackErr = fmt.Errorf("train: version %d is published; its run %s is incomplete: %w", v, run.ID(), errors.Join(errs...))
	}
	return pub, nil
}
