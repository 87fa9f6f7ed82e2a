// Package pipeline is the retraining pipeline the trainer service runs for
// each job: snapshot the data, train a candidate, evaluate it against the
// champion on the freshest labelled rows, gate, track, publish atomically
// into the model repository and wait until serve reports it ready.
package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/tracker/mlmodel"
	"github.com/flywheel-ml/flywheel/tracker/mlmodel/fromcard"
	"github.com/flywheel-ml/flywheel/train/jobs"
)

// Step names, in order; they label flywheel_trainer_step_duration_seconds.
const (
	StepSnapshot = "snapshot"
	StepTrain    = "train"
	StepEvaluate = "evaluate"
	StepGate     = "gate"
	StepTrack    = "track"
	StepPublish  = "publish"
	StepConfirm  = "confirm"
)

// Steps lists the step names in order.
var Steps = []string{StepSnapshot, StepTrain, StepEvaluate, StepGate, StepTrack, StepPublish, StepConfirm}

// ChampionAlias is the default registry alias (Config.Alias) of the
// champion, moved to a promoted version.
const ChampionAlias = "champion"

// Options are the pipeline's parts. Tracker may be nil (the track step is
// then recorded as skipped); the others are required.
//
// Without Registry (local-folder mode) the champion is the newest version
// in Config.ModelsDir, a promoted candidate is published there as the next
// version and, when tracked, registered and given the alias after that.
// With Registry (registry mode, no shared folder) the champion is the
// version Config.Alias names, downloaded into the work dir; a promoted
// candidate is registered from its tracked run (Tracker must be the same
// MLflow server, or a local store mirroring to it: the run must have
// reached MLflow) with the job's id as a tag, and the alias moves to it last.
type Options struct {
	Config    Config
	Base      BaseData
	Feedback  FeedbackSource
	Trainer   Trainer
	Predictor Predictor
	Tracker   tracker.Recorder
	// TrackerKind names the tracker's backend for the card's lineage
	// ("mlflow" or "sqlite").
	TrackerKind string
	Serving     Serving
	Registry    Registry
	Now         func() time.Time
	Logger      *slog.Logger
}

// Pipeline runs jobs; it implements jobs.Runner.
type Pipeline struct {
	o Options
}

var _ jobs.Runner = (*Pipeline)(nil)

// New checks the options.
func New(o Options) (*Pipeline, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, fmt.Errorf("pipeline config: %w", err)
	}
	var missing []string
	for name, v := range map[string]any{"Base": o.Base, "Feedback": o.Feedback, "Trainer": o.Trainer, "Predictor": o.Predictor, "Serving": o.Serving} {
		if v == nil || reflect.ValueOf(v).Kind() == reflect.Pointer && reflect.ValueOf(v).IsNil() {
			missing = append(missing, name)
		}
	}
	if o.Registry != nil && (o.Tracker == nil || reflect.ValueOf(o.Tracker).Kind() == reflect.Pointer && reflect.ValueOf(o.Tracker).IsNil()) {
		missing = append(missing, "Tracker (registry mode registers the tracked run)")
	}
	if o.Registry == nil && o.Config.ModelsDir == "" {
		return nil, errors.New("pipeline config: models_dir is empty (and no registry)")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("pipeline: missing %s", strings.Join(missing, ", "))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Pipeline{o: o}, nil
}

// run is the state of one job attempt, filled step by step.
type run struct {
	job        jobs.Job
	cfg        Config
	over       Overrides
	dir        string // work dir of the job
	modelDir   string
	champVer   int
	champ      *modelrepo.Card
	snap       *snapshot
	candDir    string
	cand       *modelrepo.Card
	candScore  Scores
	champScore Scores
	holdout    GateInput // the holdout truth and both models' predictions
	decision   *GateDecision
	trainLog   bytes.Buffer
	run        *tracker.ActiveRun // the tracker's run, nil until the track step starts it
	runID      string
	version    int
	registered string
}

// Run runs the pipeline for one job.
func (p *Pipeline) Run(ctx context.Context, job jobs.Job, rec *jobs.Recorder) error {
	r := &run{job: job, cfg: p.o.Config, modelDir: filepath.Join(p.o.Config.ModelsDir, job.Model)}
	if p.o.Registry != nil { // champions downloaded from the registry
		r.modelDir = filepath.Join(p.o.Config.WorkDir, "registry", job.Model)
	}
	if len(job.Params) > 0 {
		dec := json.NewDecoder(bytes.NewReader(job.Params))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r.over); err != nil {
			return fmt.Errorf("job params: %w", err)
		}
	}
	if r.over.Margin != nil {
		r.cfg.Margin = *r.over.Margin
	}
	if r.over.Threshold != nil {
		r.cfg.Threshold = *r.over.Threshold
	}
	if r.over.WindowDays != nil {
		r.cfg.WindowDays = *r.over.WindowDays
	}
	if err := r.cfg.Validate(); err != nil {
		return fmt.Errorf("job params: %w", err)
	}
	r.dir = filepath.Join(p.o.Config.WorkDir, job.ID, "attempt-"+strconv.Itoa(job.Attempt))
	if err := os.RemoveAll(r.dir); err != nil {
		return err
	}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return fmt.Errorf("job work directory: %w", err)
	}
	// A retried job whose earlier attempt already published skips to confirm.
	if p.o.Registry != nil {
		if done, err := p.resumeRegistered(ctx, r, rec); done || err != nil {
			return err
		}
	} else if prov, err := publishedBy(r.modelDir, job.ID); err != nil {
		return err
	} else if prov.Version > 0 {
		r.version = prov.Version
		if err := p.skip(ctx, rec, Steps[:len(Steps)-1], fmt.Sprintf("version %d was already published by an earlier attempt of this job", r.version)); err != nil {
			return err
		}
		if prov.Registered != "" && p.o.Tracker != nil { // the alias may not have moved before the interruption
			if err := p.o.Tracker.SetAlias(ctx, job.Model, r.cfg.Alias, prov.Registered); err != nil {
				p.o.Logger.Warn("moving the alias after a retry", "job_id", job.ID, "alias", r.cfg.Alias, "version", prov.Registered, "err", err)
			}
		}
		_ = rec.Result(ctx, map[string]any{"version": r.version})
		return rec.Step(ctx, StepConfirm, func(ctx context.Context, log io.Writer) (string, error) { return p.confirm(ctx, r, log) })
	}

	steps := []struct {
		name string
		fn   func(context.Context, *run, io.Writer) (string, error)
	}{
		{StepSnapshot, p.snapshot},
		{StepTrain, p.train},
		{StepEvaluate, p.evaluate},
		{StepGate, p.gate},
		{StepTrack, p.track},
		{StepPublish, p.publish},
		{StepConfirm, p.confirm},
	}
	var err error
	for _, s := range steps {
		if s.name == StepTrack && p.o.Tracker == nil {
			if err = rec.Skip(ctx, s.name, "no tracker configured"); err != nil {
				break
			}
			continue
		}
		err = rec.Step(ctx, s.name, func(ctx context.Context, log io.Writer) (string, error) { return s.fn(ctx, r, log) })
		_ = rec.Result(ctx, r.result())
		if err != nil {
			break
		}
	}
	if r.run != nil {
		status := tracker.StatusFinished
		if err != nil {
			status = tracker.StatusFailed
		}
		if eerr := r.run.End(context.WithoutCancel(ctx), status); eerr != nil {
			p.o.Logger.Warn("ending tracker run", "job_id", job.ID, "run_id", r.runID, "err", eerr)
		}
	}
	return err
}

// skip records steps as skipped with one reason.
func (p *Pipeline) skip(ctx context.Context, rec *jobs.Recorder, steps []string, reason string) error {
	for _, s := range steps {
		if err := rec.Skip(ctx, s, reason); err != nil {
			return err
		}
	}
	return nil
}

// resumeRegistered continues a job whose earlier attempt (on this trainer
// or one whose lease expired) registered its version: the alias on it
// means published (only confirm runs); otherwise the version is completed
// and promoted. done reports that the job was handled here.
func (p *Pipeline) resumeRegistered(ctx context.Context, r *run, rec *jobs.Recorder) (done bool, err error) {
	mv, ok, err := p.jobVersion(ctx, r.job.Model, r.job.ID)
	if err != nil || !ok {
		return false, err
	}
	r.adopt(mv)
	promoted := slices.Contains(mv.Aliases, r.cfg.Alias)
	if !promoted {
		if cur, err := p.o.Registry.GetModelVersionByAlias(ctx, r.job.Model, r.cfg.Alias); err == nil && cur.Version == mv.Version {
			promoted = true
		}
	}
	step := func(name string, fn func(context.Context, *run, io.Writer) (string, error)) error {
		err := rec.Step(ctx, name, func(ctx context.Context, log io.Writer) (string, error) { return fn(ctx, r, log) })
		_ = rec.Result(ctx, r.result())
		return err
	}
	if promoted {
		if err := p.skip(ctx, rec, Steps[:len(Steps)-1], fmt.Sprintf("version %s was registered and promoted by an earlier attempt of this job", mv.Version)); err != nil {
			return true, err
		}
		if err := step(StepConfirm, p.confirm); err != nil {
			return true, err
		}
		p.finishEarlierRun(ctx, r)
		return true, nil
	}
	if err := p.skip(ctx, rec, Steps[:slices.Index(Steps, StepTrack)], fmt.Sprintf("version %s was registered by an earlier attempt of this job (it passed the gate against version %d)", mv.Version, r.champVer)); err != nil {
		return true, err
	}
	for _, s := range []struct {
		name string
		fn   func(context.Context, *run, io.Writer) (string, error)
	}{{StepTrack, p.track}, {StepPublish, p.publish}, {StepConfirm, p.confirm}} {
		if err := step(s.name, s.fn); err != nil {
			return true, err
		}
	}
	p.finishEarlierRun(ctx, r)
	return true, nil
}

// finishEarlierRun marks FINISHED the run of the attempt that registered
// the version: left RUNNING by a killed trainer or FAILED by an interrupted
// one, it produced the promoted version.
func (p *Pipeline) finishEarlierRun(ctx context.Context, r *run) {
	if err := p.o.Tracker.EndRun(ctx, r.runID, tracker.StatusFinished, p.o.Now()); err != nil {
		p.o.Logger.Warn("finishing the run of the promoted version", "job_id", r.job.ID, "run_id", r.runID, "err", err)
	}
}

func (r *run) result() map[string]any {
	m := map[string]any{}
	if r.champ != nil {
		m["champion_version"] = r.champVer
	}
	if s := r.snap; s != nil {
		m["dataset_digest"] = s.Digest
		m["train_rows"] = len(s.Train)
		m["holdout_rows"] = len(s.Holdout)
		m["feedback_rows"] = s.FeedbackRows
	}
	if r.candScore.Rows > 0 {
		m["candidate_"+r.cfg.Metric] = r.candScore.get(r.cfg.Metric)
		m["champion_"+r.cfg.Metric] = r.champScore.get(r.cfg.Metric)
		m["candidate"] = r.candScore
		m["champion"] = r.champScore
	}
	if r.decision != nil {
		m["gate"] = r.decision.Metrics()
	}
	if r.runID != "" {
		m["run_id"] = r.runID
	}
	if r.registered != "" {
		m["registered_version"] = r.registered
	}
	if r.version > 0 {
		m["version"] = r.version
	}
	return m
}

// (1) snapshot: base rows up to the champion's training end + labelled feedback.
func (p *Pipeline) snapshot(ctx context.Context, r *run, log io.Writer) (string, error) {
	var err error
	if p.o.Registry != nil {
		r.champVer, r.champ, err = p.registryChampion(ctx, r)
	} else {
		r.champVer, r.champ, err = champion(r.modelDir)
	}
	if err != nil {
		return "", err
	}
	names := r.champ.FeatureNames()
	if len(names) == 0 {
		return "", fmt.Errorf("champion version %d has no feature names in its card", r.champVer)
	}
	base, err := p.o.Base.Load(ctx)
	if err != nil {
		return "", fmt.Errorf("loading base dataset: %w", err)
	}
	baseRows, err := reorder(base, names)
	if err != nil {
		return "", err
	}
	until := r.cfg.BaseUntil
	if until == "" {
		until = r.champ.Training.Dataset.Until
	}
	if until != "" {
		u, err := time.Parse(DateLayout, until)
		if err != nil {
			return "", fmt.Errorf("base dataset end %q: %w", until, err)
		}
		kept := baseRows[:0]
		for _, row := range baseRows {
			if !row.Date.After(u) {
				kept = append(kept, row)
			}
		}
		baseRows = kept
		fmt.Fprintf(log, "base rows up to %s (the champion's training end)\n", until)
	}
	fb, err := p.o.Feedback.Export(ctx, r.job.Model, time.Time{})
	if err != nil {
		return "", fmt.Errorf("exporting feedback: %w", err)
	}
	fbRows, skipped := feedbackRows(fb, names)
	// A day labelled through feedback replaces the base row of that day.
	fbDays := make(map[time.Time]bool, len(fbRows))
	for _, row := range fbRows {
		fbDays[row.Date] = true
	}
	kept, replaced := baseRows[:0], 0
	for _, row := range baseRows {
		if fbDays[row.Date] {
			replaced++
			continue
		}
		kept = append(kept, row)
	}
	baseRows = kept
	if replaced > 0 {
		fmt.Fprintf(log, "%d base rows replaced by feedback rows of the same day\n", replaced)
	}
	fmt.Fprintf(log, "base %s: %d rows; feedback: %d labelled rows (%d skipped: no date or missing features)\n", base.Name, len(baseRows), len(fbRows), skipped)
	train, holdout, all, pool := split(baseRows, fbRows, r.cfg, r.cfg.WindowDays)
	if len(holdout) < r.cfg.MinHoldout {
		return "", fmt.Errorf("only %d labelled rows to hold out, need %d", len(holdout), r.cfg.MinHoldout)
	}
	if len(train) == 0 {
		return "", errors.New("no training rows before the holdout")
	}
	s := &snapshot{Names: names, Train: train, Holdout: holdout, BaseRows: len(baseRows), FeedbackRows: len(fbRows), SkippedRows: skipped, HoldoutSource: pool,
		Path: filepath.Join(r.dir, "snapshot.csv"), TrainPath: filepath.Join(r.dir, "train.csv")}
	target := r.champ.Target
	if target == "" {
		target = "target"
	}
	if s.Digest, err = writeSnapshot(s.Path, names, target, all); err != nil {
		return "", fmt.Errorf("writing snapshot: %w", err)
	}
	if err := writeRows(s.TrainPath, names, target, train); err != nil {
		return "", fmt.Errorf("writing training rows: %w", err)
	}
	r.snap = s
	return fmt.Sprintf("%s; %d training rows %s..%s, %d holdout rows from %s %s..%s", s.Digest,
		len(train), day(train[0].Date), day(train[len(train)-1].Date),
		len(holdout), pool, day(holdout[0].Date), day(holdout[len(holdout)-1].Date)), nil
}

func day(t time.Time) string { return t.Format(DateLayout) }

// (2) train a candidate with the champion's algorithm and params, overridable.
func (p *Pipeline) train(ctx context.Context, r *run, log io.Writer) (string, error) {
	r.candDir = filepath.Join(r.dir, "candidate")
	if err := os.MkdirAll(r.candDir, 0o755); err != nil {
		return "", err
	}
	// Champion's algorithm and params, then the configured defaults, then
	// the job's overrides; params of another algorithm do not carry over.
	algo, params := r.champ.Training.Algorithm, map[string]any{}
	for k, v := range r.champ.Training.Params {
		params[k] = v
	}
	for _, o := range []struct {
		algo   string
		params map[string]any
	}{{r.cfg.Algorithm, r.cfg.Params}, {r.over.Algorithm, r.over.Params}} {
		if o.algo != "" && o.algo != algo {
			algo, params = o.algo, map[string]any{}
		}
		for k, v := range o.params {
			params[k] = v
		}
	}
	req := FitRequest{Dataset: r.snap.TrainPath, Rows: r.snap.Train, OutputDir: r.candDir, Model: r.job.Model, Features: r.snap.Names, Target: r.champ.Target,
		Algorithm: algo, Params: params, Seed: r.champ.Training.Seed, Champion: r.champ, Log: io.MultiWriter(log, &r.trainLog)}
	if err := p.o.Trainer.Fit(ctx, req); err != nil {
		return "", fmt.Errorf("training the candidate: %w", err)
	}
	c, err := modelrepo.LoadCard(filepath.Join(r.candDir, modelrepo.CardFile))
	if err != nil {
		return "", fmt.Errorf("candidate card: %w", err)
	}
	if _, err := os.Stat(filepath.Join(r.candDir, modelrepo.ModelFile)); err != nil {
		return "", fmt.Errorf("candidate model: %w", err)
	}
	if got := c.FeatureNames(); got != nil && !reflect.DeepEqual(got, r.snap.Names) {
		return "", fmt.Errorf("candidate features %v differ from the champion's %v", got, r.snap.Names)
	}
	r.cand = c
	if r.cand.Training.Algorithm == "" {
		r.cand.Training.Algorithm = algo
	}
	if r.cand.Training.Params == nil {
		r.cand.Training.Params = params
	}
	return fmt.Sprintf("algorithm %s on %d rows", r.cand.Training.Algorithm, len(r.snap.Train)), nil
}

func features(rows []Row) (x [][]float64, y []float64) {
	x = make([][]float64, len(rows))
	y = make([]float64, len(rows))
	for i, r := range rows {
		x[i], y[i] = r.Features, r.Label
	}
	return x, y
}

// (3) evaluate candidate and champion on the holdout with ONNX Runtime.
func (p *Pipeline) evaluate(ctx context.Context, r *run, log io.Writer) (string, error) {
	x, y := features(r.snap.Holdout)
	champDir := filepath.Join(r.modelDir, strconv.Itoa(r.champVer))
	champPred, err := p.o.Predictor.Predict(ctx, champDir, r.champ, x)
	if err != nil {
		return "", fmt.Errorf("champion v%d on the holdout: %w", r.champVer, err)
	}
	candPred, err := p.o.Predictor.Predict(ctx, r.candDir, r.cand, x)
	if err != nil {
		return "", fmt.Errorf("candidate on the holdout: %w", err)
	}
	r.champScore, r.candScore = score(y, champPred), score(y, candPred)
	r.holdout = GateInput{Truth: y, Champion: champPred, Candidate: candPred}
	if j := slices.Index(r.snap.Names, NaiveFeature); j >= 0 {
		r.holdout.Naive = make([]float64, len(x))
		for i := range x {
			r.holdout.Naive[i] = x[i][j]
		}
	}
	fmt.Fprintf(log, "holdout %d rows: candidate mae %.4f rmse %.4f; champion v%d mae %.4f rmse %.4f\n",
		len(y), r.candScore.MAE, r.candScore.RMSE, r.champVer, r.champScore.MAE, r.champScore.RMSE)
	// The candidate's drift reference: its training distribution.
	if r.cand.Reference == nil {
		tx, _ := features(r.snap.Train)
		pred, err := p.o.Predictor.Predict(ctx, r.candDir, r.cand, tx)
		if err != nil {
			return "", fmt.Errorf("candidate on the training rows: %w", err)
		}
		if r.cand.Reference, err = modelrepo.NewReference(r.snap.Names, tx, pred); err != nil {
			return "", fmt.Errorf("candidate's drift reference: %w", err)
		}
	}
	m := r.cfg.Metric
	return fmt.Sprintf("%s: candidate %.4f, champion v%d %.4f on %d holdout rows", m, r.candScore.get(m), r.champVer, r.champScore.get(m), len(y)), nil
}

// (4) gate: promote only a candidate really better than the champion (the
// paired bootstrap interval of the per-row error difference lies below
// zero), or one that meets the threshold the champion breaches; never one
// that loses to the seasonal naive (when the features carry it).
func (p *Pipeline) gate(_ context.Context, r *run, log io.Writer) (string, error) {
	m := r.cfg.Metric
	th, ok := r.champ.Thresholds[m]
	if r.cfg.Threshold > 0 {
		th, ok = r.cfg.Threshold, true
	}
	if !ok {
		th = 0
		fmt.Fprintf(log, "champion card has no %s threshold: absolute check skipped\n", m)
	}
	in := r.holdout
	in.Metric, in.Threshold, in.Margin = m, th, r.cfg.Margin
	in.Seed = seedOf(r.job.ID)
	d := Decide(in)
	r.decision = &d
	figures := d.Summary(m, r.champVer)
	if ok {
		figures += fmt.Sprintf(" (threshold %.4f)", th)
	}
	fmt.Fprintln(log, figures)
	if !d.Promote {
		return figures, &jobs.Rejection{Reason: figures}
	}
	return figures, nil
}

// seedOf derives the gate's bootstrap seed from the job id (stable across retries).
func seedOf(id string) uint64 {
	var h uint64 = 14695981039346656037
	for i := 0; i < len(id); i++ {
		h = (h ^ uint64(id[i])) * 1099511628211
	}
	return h
}

// (4b) finish the candidate's card for version v.
func (p *Pipeline) finishCard(r *run) {
	c := r.cand
	c.Name = r.job.Model
	c.Version = r.version
	c.CreatedAt = p.o.Now().UTC()
	if c.Task == "" {
		c.Task = r.champ.Task
	}
	if c.Target == "" {
		c.Target = r.champ.Target
	}
	switch m := r.cfg.ThresholdMargin; {
	case m > 0 && r.candScore.Rows > 0:
		// The holdout is later than the training rows, like live traffic.
		c.Thresholds = map[string]float64{"mae": round6(m * r.candScore.MAE), "rmse": round6(m * r.candScore.RMSE)}
	case r.champ.Thresholds != nil:
		// The model's live-error objective carries over to its new version
		// (a trainer's own test split shares the training period and would
		// set it too tight).
		c.Thresholds = r.champ.Thresholds
	}
	train := r.snap.Train
	c.Training.Dataset = modelrepo.Dataset{Name: r.champ.Training.Dataset.Name + "+feedback", Digest: r.snap.Digest, Rows: len(train),
		From: day(train[0].Date), Until: day(train[len(train)-1].Date), Source: "trainer job " + r.job.ID}
	c.Training.RunID = r.runID
	if p.o.Tracker != nil {
		c.Training.Tracker = p.o.TrackerKind
	}
	if c.Metrics == nil {
		c.Metrics = map[string]map[string]float64{}
	}
	c.Metrics["holdout"] = map[string]float64{"mae": r.candScore.MAE, "rmse": r.candScore.RMSE, "rows": float64(r.candScore.Rows)}
	c.Metrics["holdout_champion"] = map[string]float64{"mae": r.champScore.MAE, "rmse": r.champScore.RMSE, "version": float64(r.champVer)}
	if r.decision != nil {
		c.Metrics["gate"] = r.decision.Metrics()
	}
}

func round6(v float64) float64 { return math.Round(v*1e6) / 1e6 }

func (p *Pipeline) nextVersion(r *run) error {
	v, err := modelrepo.NextVersion(r.modelDir)
	r.version = int(v)
	return err
}

// (5) track: run with params, metrics, dataset and artifacts; register the
// version (no alias yet: it moves in publish, the last step).
func (p *Pipeline) track(ctx context.Context, r *run, log io.Writer) (string, error) {
	if p.o.Registry != nil {
		return p.trackRegistry(ctx, r, log)
	}
	if err := p.nextVersion(r); err != nil {
		return "", err
	}
	if err := p.logRun(ctx, r, log); err != nil {
		return "", err
	}
	mv, err := r.run.RegisterModel(ctx, r.job.Model, "model", "")
	r.registered = mv.Version
	if err != nil {
		return "", fmt.Errorf("registering the model version: %w", err)
	}
	// One version number: the repository takes the registry's when that
	// folder is free; the card records the registry's either way.
	if v, perr := strconv.Atoi(mv.Version); perr == nil {
		if _, serr := os.Stat(modelrepo.VersionDir(r.modelDir, int64(v))); v != r.version && errors.Is(serr, os.ErrNotExist) {
			r.version, r.cand.Version = v, v
		}
		r.cand.Training.RegistryVersion = mv.Version
		cardJSON, _ := json.MarshalIndent(r.cand, "", "  ")
		if err := r.run.Log(ctx, tracker.Result{Files: map[string][]byte{"model/" + modelrepo.CardFile: cardJSON}}); err != nil {
			return "", fmt.Errorf("logging the card: %w", err)
		}
	}
	return fmt.Sprintf("run %s; registered %s version %s; repository version %d", r.runID, r.job.Model, mv.Version, r.version), nil
}

// trackRegistry is the track step of registry mode: this job's version is
// registered once (found by its job tag when an earlier attempt registered
// it), its card names its number and MLflow reports it READY.
func (p *Pipeline) trackRegistry(ctx context.Context, r *run, log io.Writer) (string, error) {
	if r.registered == "" {
		mv, ok, err := p.jobVersion(ctx, r.job.Model, r.job.ID)
		if err != nil {
			return "", err
		}
		if ok {
			r.adopt(mv)
			fmt.Fprintf(log, "version %s of this job is already registered (run %s)\n", mv.Version, mv.RunID)
		} else {
			if err := p.logRun(ctx, r, log); err != nil {
				return "", err
			}
			if err := p.runInMLflow(ctx, r); err != nil {
				return "", err
			}
			if err := p.registerVersion(ctx, r, log); err != nil {
				return "", err
			}
		}
	}
	if err := p.completeVersion(ctx, r, log); err != nil {
		return "", err
	}
	return fmt.Sprintf("run %s; registered %s version %s (%s=%s), %s", r.runID, r.job.Model, r.registered, TagJobID, r.job.ID, StatusReady), nil
}

// logRun starts the tracker run of the candidate and logs its params,
// metrics, dataset and artifacts (the ONNX model, the card, MLmodel files).
func (p *Pipeline) logRun(ctx context.Context, r *run, log io.Writer) error {
	run, err := tracker.Start(ctx, p.o.Tracker, r.cfg.Experiment, tracker.RunOptions{Name: r.job.ID, Tags: map[string]string{
		"flywheel.job_id": r.job.ID, "flywheel.trigger": r.job.Trigger, "flywheel.alerts": strings.Join(r.job.Alerts, ","),
		"flywheel.model": r.job.Model, "flywheel.champion_version": strconv.Itoa(r.champVer),
	}, Source: tracker.Source{Name: "flywheel trainer", Type: "JOB"}})
	if err != nil {
		return err
	}
	r.run, r.runID = run, run.ID()
	p.finishCard(r)
	params := map[string]string{"algorithm": r.cand.Training.Algorithm, "window_days": strconv.Itoa(r.cfg.WindowDays),
		"holdout_days": strconv.Itoa(r.cfg.HoldoutDays), "margin": formatFloat(r.cfg.Margin), "gate_metric": r.cfg.Metric,
		"job_attempt": strconv.Itoa(r.job.Attempt)}
	for k, v := range r.cand.Training.Params {
		params["param."+k] = fmt.Sprint(v)
	}
	metrics := map[string]float64{"holdout_mae": r.candScore.MAE, "holdout_rmse": r.candScore.RMSE,
		"champion_holdout_mae": r.champScore.MAE, "champion_holdout_rmse": r.champScore.RMSE,
		"train_rows": float64(len(r.snap.Train)), "holdout_rows": float64(len(r.snap.Holdout))}
	for split, ms := range r.cand.Metrics {
		if split == "holdout" || split == "holdout_champion" {
			continue
		}
		for k, v := range ms {
			metrics[split+"_"+k] = v
		}
	}
	if n, err := logHistory(ctx, run, r.candDir); err != nil {
		return fmt.Errorf("logging the training history: %w", err)
	} else if n > 0 {
		fmt.Fprintf(log, "logged %d training iterations (%s*)\n", n, StepPrefix)
	}
	src, _ := json.Marshal(map[string]string{"uri": r.snap.Path})
	profile, _ := json.Marshal(map[string]any{"num_rows": len(r.snap.Train), "sha256": r.snap.Digest})
	cardJSON, _ := json.MarshalIndent(r.cand, "", "  ")
	files := map[string][]byte{"model/" + modelrepo.CardFile: cardJSON, "trainer.log": r.trainLog.Bytes()}
	tags := map[string]string{}
	// The candidate as an MLflow Model (MLmodel, signature, input example,
	// env files) beside model.onnx and the card; best effort.
	if err := mlflowModel(r, files, tags); err != nil {
		if p.o.Registry != nil { // serve replicas load the version through MLmodel
			return fmt.Errorf("MLmodel of the candidate: %w", err)
		}
		fmt.Fprintf(log, "no MLmodel for the run: %v\n", err)
	}
	if err := run.Log(ctx, tracker.Result{
		Params: params, Metrics: metrics, Tags: tags,
		Datasets: []tracker.Dataset{{Name: r.cand.Training.Dataset.Name, Digest: tracker.ShortDigest(r.snap.Digest), SourceType: "local",
			Source: string(src), Profile: string(profile), Context: "training"}},
		Artifacts: map[string]string{"model/" + modelrepo.ModelFile: filepath.Join(r.candDir, modelrepo.ModelFile)},
		Files:     files,
	}); err != nil {
		return fmt.Errorf("logging the run: %w", err)
	}
	return nil
}

// logHistory logs the candidate's per-iteration metrics (HistoryFile, when
// the trainer wrote one) as steps with keys prefixed StepPrefix; it returns
// the number of iterations logged.
func logHistory(ctx context.Context, run *tracker.ActiveRun, candDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(candDir, HistoryFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var hist []Iteration
	if err := json.Unmarshal(b, &hist); err != nil {
		return 0, fmt.Errorf("%s: %w", HistoryFile, err)
	}
	for _, it := range hist {
		m := make(map[string]float64, len(it.Metrics))
		for k, v := range it.Metrics {
			m[StepPrefix+k] = v
		}
		if err := run.LogMetrics(ctx, it.Iteration, m); err != nil {
			return 0, err
		}
	}
	return len(hist), nil
}

// (6) publish: in local-folder mode atomically to models/<name>/<next>/,
// then (when tracked) the alias moves to the registered version; in
// registry mode the alias move is the publication. Either way the alias
// moves last, once the version is complete.
func (p *Pipeline) publish(ctx context.Context, r *run, log io.Writer) (string, error) {
	if p.o.Registry != nil {
		return p.promote(ctx, r)
	}
	if r.runID == "" { // no tracker: the card is finished here
		if err := p.nextVersion(r); err != nil {
			return "", err
		}
		p.finishCard(r)
	}
	if err := r.cand.Validate(); err != nil {
		return "", fmt.Errorf("candidate card: %w", err)
	}
	if err := publish(r.modelDir, r.version, filepath.Join(r.candDir, modelrepo.ModelFile), r.cand,
		provenance{JobID: r.job.ID, Attempt: r.job.Attempt, RunID: r.runID, Registered: r.registered}); err != nil {
		return "", err
	}
	detail := fmt.Sprintf("published %s", filepath.Join(r.modelDir, strconv.Itoa(r.version)))
	if r.registered != "" && p.o.Tracker != nil {
		// The folder serves already: a registry error is reported, not a failure.
		if err := p.o.Tracker.SetAlias(ctx, r.job.Model, r.cfg.Alias, r.registered); err != nil {
			fmt.Fprintf(log, "alias %s not moved to registry version %s: %v\n", r.cfg.Alias, r.registered, err)
		} else {
			detail += fmt.Sprintf("; alias %s on registry version %s", r.cfg.Alias, r.registered)
		}
	}
	return detail, nil
}

// (7) confirm serve reports the new version ready.
func (p *Pipeline) confirm(ctx context.Context, r *run, log io.Writer) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ReadyWait)
	defer cancel()
	t := time.NewTicker(r.cfg.ReadyPoll)
	defer t.Stop()
	var last error
	for polls := 1; ; polls++ {
		ok, err := p.o.Serving.VersionReady(ctx, r.job.Model, r.version)
		if err == nil && ok {
			return fmt.Sprintf("serve reports %s version %d ready after %d polls", r.job.Model, r.version, polls), nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if parent := context.Cause(ctx); errors.Is(parent, context.DeadlineExceeded) {
				msg := fmt.Sprintf("serve did not report %s version %d ready within %s", r.job.Model, r.version, r.cfg.ReadyWait)
				if last != nil {
					msg += " (last error: " + last.Error() + ")"
				}
				return "", errors.New(msg)
			}
			return "", ctx.Err()
		case <-t.C:
		}
	}
}

// mlflowModel adds the MLflow Model files of the candidate under model/ and
// the mlflow.log-model.history tag.
func mlflowModel(r *run, files map[string][]byte, tags map[string]string) error {
	graph, err := os.ReadFile(filepath.Join(r.candDir, modelrepo.ModelFile))
	if err != nil {
		return err
	}
	m, err := fromcard.Model(r.cand, graph, r.runID, "model")
	if err != nil {
		return err
	}
	fs, err := m.Files()
	if err != nil {
		return err
	}
	hist, err := m.HistoryTag()
	if err != nil {
		return err
	}
	for name, b := range fs {
		files["model/"+name] = b
	}
	tags[mlmodel.TagHistory] = hist
	return nil
}
