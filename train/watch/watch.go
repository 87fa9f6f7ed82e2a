// Package watch guards a model after a promotion: for a window after a new
// version starts serving, it scores the version it replaced in shadow on the
// very requests the new one answered (the features serve logged with each
// prediction), pairs both with the labels as they arrive, and when the new
// version is significantly worse — the paired bootstrap interval of
// (new − previous) absolute error lies above zero — it restores the previous
// version as the served one, records the rollback in the tracker and counts
// it in flywheel_trainer_rollbacks_total (the ModelRolledBack alert).
//
// Restoring renames models/<model>/<version> to a hidden
// models/<model>/.rolledback-<version>-<unix time>: serve ignores hidden
// directories and serves the newest remaining version, the previous one.
//
// In registry mode (Options.Registry) the watched version is the one the
// alias names and the version it replaced is its flywheel.champion_version
// tag (set by the pipeline when it registered it); both are downloaded into
// ModelsDir. Restoring moves the alias back to the previous version (serve
// replicas following models:/<model>@<alias> switch back) and tags the
// rolled-back one TagRolledBack, so it is not watched again.
package watch

import (
	"context"
	"errors"
	"fmt"
	"github.com/flywheel-ml/flywheel/internal/validate"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/server/modelsource"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/train/pipeline"
)

// Config tunes the watch.
type Config struct {
	Model     string        // model name in the repository
	ModelsDir string        // the repository serve watches; in registry mode, where versions are downloaded
	Window    time.Duration // how long after its publication a version is watched
	MinRows   int           // labelled requests of the new version needed before judging
	Interval  time.Duration // time between checks
	Alias     string        // tracker alias moved back to the previous version ("" for none; required in registry mode)
}

// Version tags of registry mode: a rolled-back version carries TagRolledBack
// (the time of the rollback) and TagRestoredVersion (the version the alias
// went back to).
const (
	TagRolledBack      = "flywheel.rolled_back"
	TagRestoredVersion = "flywheel.restored_version"
)

// Registry is the MLflow model registry of registry mode
// (tracker/mlflow.Client).
type Registry interface {
	modelsource.Registry
	SetAlias(ctx context.Context, name, alias, version string) error
	AnnotateModelVersion(ctx context.Context, name, version string, a tracker.VersionAnnotation) error
}

// DefaultConfig returns the defaults: a day's watch, 14 labels, a check a minute.
func DefaultConfig() Config {
	return Config{Model: "ridership", ModelsDir: "models", Window: 24 * time.Hour, MinRows: 14, Interval: time.Minute, Alias: "champion"}
}

// Validate checks the config.
func (c Config) Validate() error {
	var v validate.Errors
	v.If(c.Model == "" || c.ModelsDir == "", "watch: model and models directory must be set")
	v.If(c.Window <= 0 || c.Interval <= 0, "watch: window %s and interval %s must be positive", c.Window, c.Interval)
	v.If(c.MinRows < 2, "watch: min rows %d must be at least 2", c.MinRows)
	return v.Err("")
}

// Options are the watcher's dependencies.
type Options struct {
	Config
	Feedback   pipeline.FeedbackSource
	Predictor  pipeline.Predictor
	Recorder   tracker.Recorder // nil: no tracking
	Registry   Registry         // non-nil: registry mode (watch and move Alias)
	Experiment string           // tracker experiment of rollback runs
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// Watcher checks the newest version against the one it replaced.
type Watcher struct {
	o         Options
	rollbacks *prometheus.CounterVec
	watched   *prometheus.GaugeVec
}

// New validates the options and registers the watch metrics.
func New(o Options) (*Watcher, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	if o.Feedback == nil || o.Predictor == nil {
		return nil, errors.New("watch: feedback source and predictor are required")
	}
	if o.Registry != nil && o.Alias == "" {
		return nil, errors.New("watch: registry mode needs the alias it moves back")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	w := &Watcher{o: o,
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flywheel_trainer_rollbacks_total",
			Help: "Promoted versions the watch rolled back because live labels showed them significantly worse than the version they replaced."},
			[]string{"model"}),
		watched: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flywheel_trainer_watch_rows",
			Help: "Labelled requests of the newest version scored against the previous one in shadow, while it is watched (0 outside a watch)."},
			[]string{"model"}),
	}
	w.rollbacks.WithLabelValues(o.Model)
	w.watched.WithLabelValues(o.Model)
	if o.Registerer != nil {
		if err := o.Registerer.Register(w.rollbacks); err != nil {
			return nil, fmt.Errorf("watch: %w", err)
		}
		if err := o.Registerer.Register(w.watched); err != nil {
			return nil, fmt.Errorf("watch: %w", err)
		}
	}
	return w, nil
}

// Verdict is one check's result.
type Verdict struct {
	Version, Previous int                    // the watched version and the one it replaced (0: nothing watched)
	Rows              int                    // labelled requests of Version scored in shadow
	Decision          *pipeline.GateDecision // candidate = Version, champion = Previous
	RolledBack        bool
	RolledBackTo      string // the hidden directory Version was moved to (registry mode: models:/<model>/<Previous>, where the alias went)
	Note              string
}

// watched is the version under watch and the one it replaced, both in
// local folders of modelDir.
type watched struct {
	v, prev  int
	modelDir string
}

func (p watched) card(v int) (*modelrepo.Card, error) {
	c, err := modelrepo.LoadCard(filepath.Join(p.modelDir, strconv.Itoa(v), modelrepo.CardFile))
	if err != nil {
		return nil, fmt.Errorf("watch: card of version %d: %w", v, err)
	}
	return c, nil
}

// current finds the watched pair: in a folder, the two newest versions; in
// the registry, the alias's version and its flywheel.champion_version. v 0
// with a note: nothing to watch.
func (w *Watcher) current(ctx context.Context) (watched, string, error) {
	p := watched{modelDir: filepath.Join(w.o.ModelsDir, w.o.Model)}
	if w.o.Registry == nil {
		vs, err := versions(p.modelDir)
		if err != nil || len(vs) < 2 {
			return p, "fewer than two versions", err
		}
		p.v, p.prev = vs[len(vs)-1], vs[len(vs)-2]
		return p, "", nil
	}
	ref := "models:/" + w.o.Model + "@" + w.o.Alias
	mv, err := w.o.Registry.GetModelVersionByAlias(ctx, w.o.Model, w.o.Alias)
	if errors.Is(err, tracker.ErrNotFound) {
		return p, ref + " names no version", nil
	}
	if err != nil {
		return p, "", fmt.Errorf("watch: %s: %w", ref, err)
	}
	prev, _ := strconv.Atoi(mv.Tags[pipeline.TagChampionVersion])
	switch {
	case mv.Tags[TagRolledBack] != "":
		return p, fmt.Sprintf("%s is version %s, rolled back once already (%s): not watched", ref, mv.Version, mv.Tags[TagRolledBack]), nil
	case prev <= 0 || strconv.Itoa(prev) == mv.Version:
		return p, fmt.Sprintf("%s is version %s, which replaced no version (no %s tag)", ref, mv.Version, pipeline.TagChampionVersion), nil
	}
	for _, v := range []string{mv.Version, strconv.Itoa(prev)} {
		n, err := modelsource.Download(ctx, w.o.Registry, w.o.Model, v, p.modelDir, 0)
		if err != nil {
			return p, "", fmt.Errorf("watch: downloading version %s of %s: %w", v, w.o.Model, err)
		}
		if v == mv.Version {
			p.v = int(n)
		}
	}
	p.prev = prev
	return p, "", nil
}

// restore serves the previous version again: in a folder by hiding the
// watched one, in the registry by moving the alias back (only if it is
// still on the watched version) and tagging the watched version. It
// returns where the watched version went.
func (w *Watcher) restore(ctx context.Context, p watched) (string, error) {
	if w.o.Registry == nil {
		hidden := filepath.Join(p.modelDir, fmt.Sprintf(".rolledback-%d-%d", p.v, w.o.Now().Unix()))
		if err := os.Rename(filepath.Join(p.modelDir, strconv.Itoa(p.v)), hidden); err != nil {
			return "", fmt.Errorf("watch: rolling back version %d: %w", p.v, err)
		}
		return hidden, nil
	}
	reg, v, prev := w.o.Registry, strconv.Itoa(p.v), strconv.Itoa(p.prev)
	cur, err := reg.GetModelVersionByAlias(ctx, w.o.Model, w.o.Alias)
	if err != nil {
		return "", fmt.Errorf("watch: alias %s before rolling back: %w", w.o.Alias, err)
	}
	if cur.Version != v {
		return "", fmt.Errorf("watch: alias %s moved to version %s meanwhile: version %s not rolled back", w.o.Alias, cur.Version, v)
	}
	if err := reg.SetAlias(ctx, w.o.Model, w.o.Alias, prev); err != nil {
		return "", fmt.Errorf("watch: moving alias %s back to version %s: %w", w.o.Alias, prev, err)
	}
	if err := reg.AnnotateModelVersion(ctx, w.o.Model, v, tracker.VersionAnnotation{Tags: map[string]string{
		TagRolledBack: w.o.Now().UTC().Format(time.RFC3339), TagRestoredVersion: prev}}); err != nil {
		w.o.Logger.Warn("tagging the rolled-back version", "model", w.o.Model, "version", v, "err", err)
	}
	return "models:/" + w.o.Model + "/" + prev, nil
}

// Check runs one watch pass.
func (w *Watcher) Check(ctx context.Context) (Verdict, error) {
	p, note, err := w.current(ctx)
	if err != nil || p.v == 0 {
		w.watched.WithLabelValues(w.o.Model).Set(0)
		return Verdict{Note: note}, err
	}
	v, prev, modelDir := p.v, p.prev, p.modelDir
	verdict := Verdict{Version: v, Previous: prev}
	vc, err := p.card(v)
	if err != nil {
		return verdict, err
	}
	since := vc.CreatedAt
	if w.o.Now().Sub(since) > w.o.Window {
		w.watched.WithLabelValues(w.o.Model).Set(0)
		verdict.Note = fmt.Sprintf("version %d published %s ago: outside the %s watch", v, w.o.Now().Sub(since).Round(time.Second), w.o.Window)
		return verdict, nil
	}
	pc, err := p.card(prev)
	if err != nil {
		return verdict, err
	}
	rows, err := w.o.Feedback.Export(ctx, w.o.Model, since)
	if err != nil {
		return verdict, fmt.Errorf("watch: feedback export: %w", err)
	}
	names := pc.FeatureNames()
	var x [][]float64
	var truth, served []float64
	for _, r := range rows {
		if r.Version == nil || int(*r.Version) != v {
			continue
		}
		row := make([]float64, len(names))
		ok := true
		for j, n := range names {
			if row[j], ok = r.Features[n]; !ok {
				break
			}
		}
		if !ok {
			continue // the previous version needs a feature the request did not carry
		}
		x = append(x, row)
		truth = append(truth, r.Label)
		served = append(served, r.Prediction)
	}
	verdict.Rows = len(x)
	w.watched.WithLabelValues(w.o.Model).Set(float64(len(x)))
	if len(x) < w.o.MinRows {
		verdict.Note = fmt.Sprintf("%d of %d labelled requests of version %d so far", len(x), w.o.MinRows, v)
		return verdict, nil
	}
	shadow, err := w.o.Predictor.Predict(ctx, filepath.Join(modelDir, strconv.Itoa(prev)), pc, x)
	if err != nil {
		return verdict, fmt.Errorf("watch: version %d in shadow: %w", prev, err)
	}
	d := pipeline.Decide(pipeline.GateInput{Truth: truth, Champion: shadow, Candidate: served, Metric: "mae", Seed: uint64(v)})
	verdict.Decision = &d
	if !(d.DiffLow > 0) {
		verdict.Note = fmt.Sprintf("version %d MAE %.4f vs version %d in shadow %.4f on %d requests; interval [%+.4f, %+.4f]: keep",
			v, d.Candidate, prev, d.Champion, len(x), d.DiffLow, d.DiffHigh)
		return verdict, nil
	}
	hidden, err := w.restore(ctx, p)
	if err != nil {
		return verdict, err
	}
	verdict.RolledBack, verdict.RolledBackTo = true, hidden
	w.rollbacks.WithLabelValues(w.o.Model).Inc()
	w.watched.WithLabelValues(w.o.Model).Set(0)
	verdict.Note = fmt.Sprintf("version %d MAE %.4f vs version %d in shadow %.4f on %d requests; interval [%+.4f, %+.4f] above zero: rolled back to version %d",
		v, d.Candidate, prev, d.Champion, len(x), d.DiffLow, d.DiffHigh, prev)
	w.o.Logger.Warn("model rolled back", "model", w.o.Model, "from", v, "to", prev, "rows", len(x),
		"mae", d.Candidate, "previous_mae", d.Champion, "diff_low", d.DiffLow, "diff_high", d.DiffHigh, "moved_to", hidden)
	if err := w.record(ctx, verdict, pc); err != nil {
		w.o.Logger.Warn("recording the rollback in the tracker", "err", err)
	}
	return verdict, nil
}

// record writes a rollback run and, in folder mode, moves the alias back to
// the previous version's registry version (its card's
// training.registry_version, when it was registered).
func (w *Watcher) record(ctx context.Context, v Verdict, prev *modelrepo.Card) error {
	if w.o.Recorder == nil {
		return nil
	}
	tags := map[string]string{"flywheel.rollback": "true", "flywheel.model": w.o.Model,
		"flywheel.rolled_back_version": strconv.Itoa(v.Version), "flywheel.restored_version": strconv.Itoa(v.Previous)}
	run, err := tracker.Start(ctx, w.o.Recorder, w.o.Experiment, tracker.RunOptions{
		Name: fmt.Sprintf("rollback-%s-v%d", w.o.Model, v.Version), Tags: tags})
	if err != nil {
		return err
	}
	d := v.Decision
	lerr := run.LogMetrics(ctx, 0, map[string]float64{"watch_rows": float64(v.Rows), "watch_mae": d.Candidate,
		"watch_previous_mae": d.Champion, "watch_diff_low": d.DiffLow, "watch_diff_high": d.DiffHigh,
		"rolled_back_version": float64(v.Version), "restored_version": float64(v.Previous)})
	var aerr error
	if rv := prev.Training.RegistryVersion; w.o.Registry == nil && w.o.Alias != "" && rv != "" {
		aerr = w.o.Recorder.SetAlias(ctx, w.o.Model, w.o.Alias, rv)
	}
	status := tracker.StatusFinished
	if lerr != nil || aerr != nil {
		status = tracker.StatusFailed
	}
	return errors.Join(lerr, aerr, run.End(ctx, status))
}

// Run checks every Interval until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.o.Interval)
	defer t.Stop()
	for {
		if v, err := w.Check(ctx); err != nil {
			w.o.Logger.Warn("watch check", "err", err)
		} else if v.Version > 0 && v.Rows > 0 {
			w.o.Logger.Debug("watch check", "note", v.Note)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// versions lists the integer version directories of modelDir, ascending.
func versions(modelDir string) ([]int, error) {
	ents, err := os.ReadDir(modelDir)
	if err != nil {
		return nil, fmt.Errorf("watch: reading %s: %w", modelDir, err)
	}
	var out []int
	for _, e := range ents {
		if v, err := strconv.Atoi(e.Name()); err == nil && v > 0 && e.IsDir() && strconv.Itoa(v) == e.Name() {
			out = append(out, v)
		}
	}
	sort.Ints(out)
	return out, nil
}
