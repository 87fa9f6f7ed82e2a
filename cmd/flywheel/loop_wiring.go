package main

// The parts of the retraining loop that other areas provide (see
// docs/loop-wiring.md):
//   loopBase       → train/features (the 48 numeric columns, dow, holiday)
//   loopTrainer    → the built-in train.Fit, or --external-cmd
//   loopTracker    → tracker/sqlite, or tracker/mlflow with the SQLite fallback
//   replayFeatures → train/features.FromMap

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/tracker"
	"github.com/flywheel-ml/flywheel/train"
	"github.com/flywheel-ml/flywheel/train/external"
	"github.com/flywheel-ml/flywheel/train/features"
	"github.com/flywheel-ml/flywheel/train/pipeline"
	"github.com/flywheel-ml/flywheel/train/replay"
)

// Feature sets (--features of trainer and replay).
const (
	// featuresRidership is train/features: the dataset's 48 numeric columns,
	// then dow and holiday derived from the date — what the ridership model serves.
	featuresRidership = "ridership"
	// featuresColumns is every numeric column of the CSV as it is, in name
	// order (replay) or file order (trainer), for other datasets.
	featuresColumns = "columns"
)

func checkFeatureSet(s string) error {
	if s != featuresRidership && s != featuresColumns {
		return usageError{fmt.Errorf("--features %q is not %s or %s", s, featuresRidership, featuresColumns)}
	}
	return nil
}

// loopBase is the base dataset of retraining: with the ridership feature set
// the dataset CSV goes through the shared feature function, so rows have
// exactly the served features.
func loopBase(f trainerFlags) pipeline.BaseData {
	if f.features == featuresColumns {
		return pipeline.CSVBase{Path: f.data, Target: f.target}
	}
	return pipeline.CSVBase{Path: f.data, Target: f.target, Names: features.Names(), Features: features.FromMap}
}

// loopTrainer is the candidate trainer: the built-in Go trainer, or the
// external command when --external-cmd is set.
func loopTrainer(f trainerFlags) (pipeline.Trainer, error) {
	if cmd := strings.Fields(f.externalCmd); len(cmd) > 0 {
		return &external.Trainer{Command: cmd, Timeout: f.externalTimeout}, nil
	}
	if f.testFraction <= 0 || f.testFraction >= 1 {
		return nil, usageError{fmt.Errorf("--test-fraction %v must be in (0, 1)", f.testFraction)}
	}
	return builtinTrainer{testFraction: f.testFraction, referenceDays: f.referenceDays}, nil
}

// loopParams turns the trainer's --algorithm and --set flags into pipeline
// defaults (a job's own overrides still win).
func loopParams(f trainerFlags) (string, map[string]any, error) {
	if f.algorithm != "" && !slices.Contains(train.Algorithms(), f.algorithm) {
		return "", nil, usageError{fmt.Errorf("--algorithm %q is not one of %s", f.algorithm, strings.Join(train.Algorithms(), ", "))}
	}
	var params map[string]any
	for _, kv := range f.sets {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return "", nil, usageError{fmt.Errorf("--set %q: want key=value", kv)}
		}
		var val any
		if err := yaml.Unmarshal([]byte(v), &val); err != nil {
			return "", nil, usageError{fmt.Errorf("--set %q: %w", kv, err)}
		}
		if params == nil {
			params = map[string]any{}
		}
		params[strings.TrimSpace(k)] = val
	}
	return f.algorithm, params, nil
}

// builtinTrainer fits a candidate with train.Fit on the pipeline's training
// CSV; the newest testFraction of the rows score the card's test metrics.
// It writes model.onnx, model.json and the per-iteration history
// (pipeline.HistoryFile) the track step logs as iter_* steps.
type builtinTrainer struct {
	testFraction  float64
	referenceDays int
}

func (b builtinTrainer) Fit(ctx context.Context, req pipeline.FitRequest) error {
	rows, err := readTrainingCSV(req.Dataset, req.Features)
	if err != nil {
		return err
	}
	if len(rows) < 2 {
		return fmt.Errorf("%s: %d rows, need at least 2", req.Dataset, len(rows))
	}
	trainRows, testRows := interleave(rows, b.testFraction)
	params := train.DefaultParams()
	if len(req.Params) > 0 {
		doc, err := yaml.Marshal(map[string]any{req.Algorithm: req.Params})
		if err != nil {
			return fmt.Errorf("hyper-parameters: %w", err)
		}
		if err := train.DecodeParams(&params, doc); err != nil {
			return err
		}
	}
	cfg := train.DefaultConfig()
	cfg.Name, cfg.Algorithm, cfg.Params, cfg.Seed = req.Model, req.Algorithm, params, req.Seed
	cfg.TrainerVersion = "flywheel trainer " + version
	cfg.ReferenceDays = b.referenceDays
	if req.Champion != nil {
		cfg.GitCommit = req.Champion.Training.GitCommit
	}
	cfg.Data = &train.Data{Name: "snapshot", Source: req.Dataset, FeatureNames: req.Features, Train: trainRows, Test: testRows}
	var hist []pipeline.Iteration
	last := time.Time{}
	cfg.Progress = func(p train.Progress) {
		hist = append(hist, pipeline.Iteration{Iteration: int64(p.Iteration), Metrics: p.Metrics})
		if time.Since(last) >= time.Second || p.Iteration == p.Total {
			last = time.Now()
			fmt.Fprintf(req.Log, "%s %d/%d%s\n", p.Algorithm, p.Iteration, p.Total, formatMetrics(p.Metrics))
		}
	}
	fmt.Fprintf(req.Log, "built-in trainer: %s on %d rows %s..%s (%d interleaved rows score the card's test metrics), params %v\n",
		req.Algorithm, len(trainRows), day(rows[0].Date), day(rows[len(rows)-1].Date), len(testRows), train.FlatParams(req.Params))
	res, err := train.Fit(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(req.Log, "fitted in %s, %d iterations kept; test mae %.4f rmse %.4f\n", res.FitDuration.Round(time.Millisecond),
		res.Iterations, res.Metrics["test"]["mae"], res.Metrics["test"]["rmse"])
	if err := os.WriteFile(filepath.Join(req.OutputDir, modelrepo.ModelFile), res.ONNX, 0o644); err != nil {
		return err
	}
	h, err := json.Marshal(hist)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(req.OutputDir, pipeline.HistoryFile), h, 0o644); err != nil {
		return err
	}
	return res.Card.Write(filepath.Join(req.OutputDir, modelrepo.CardFile))
}

// interleave splits rows into training and test rows: every k-th row
// (k = 1/fraction) is a test row, so every period — the newest labels
// included — is trained on. The pipeline's own holdout (the freshest
// labelled days, never given to the trainer) decides promotion.
func interleave(rows []train.Example, fraction float64) (trainRows, testRows []train.Example) {
	k := max(2, int(1/fraction+0.5))
	for i, r := range rows {
		if i%k == k-1 {
			testRows = append(testRows, r)
		} else {
			trainRows = append(trainRows, r)
		}
	}
	return trainRows, testRows
}

func day(t time.Time) string { return t.Format(features.DateLayout) }

func formatMetrics(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%.4f", k, m[k])
	}
	return b.String()
}

// readTrainingCSV reads the pipeline's training CSV: date, the features in
// order, then the target.
func readTrainingCSV(path string, names []string) ([]train.Example, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: header: %w", path, err)
	}
	if len(header) != len(names)+2 || header[0] != "date" || !slices.Equal(header[1:len(header)-1], names) {
		return nil, fmt.Errorf("%s: header %v is not date, the %d features, target", path, header, len(names))
	}
	var out []train.Example
	for line := 2; ; line++ {
		rec, err := r.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		d, err := time.Parse(features.DateLayout, rec[0])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: date: %w", path, line, err)
		}
		v := make([]float64, len(rec)-1)
		for i, s := range rec[1:] {
			if v[i], err = strconv.ParseFloat(s, 64); err != nil {
				return nil, fmt.Errorf("%s:%d: %s: %w", path, line, header[i+1], err)
			}
		}
		out = append(out, train.Example{Date: d, Features: v[:len(names)], Target: v[len(names)]})
	}
}

// trackerAdapter is a tracker.Recorder behind pipeline.Tracker.
type trackerAdapter struct {
	t    tracker.Recorder
	kind string // "sqlite" or "mlflow"
}

var (
	_ pipeline.Tracker    = trackerAdapter{}
	_ pipeline.StepLogger = trackerAdapter{}
)

func (a trackerAdapter) Kind() string { return a.kind }

func (a trackerAdapter) StartRun(ctx context.Context, experiment, name string, tags map[string]string) (string, error) {
	exp, err := a.t.GetOrCreateExperiment(ctx, experiment)
	if err != nil {
		return "", fmt.Errorf("experiment %q: %w", experiment, err)
	}
	info, err := a.t.StartRun(ctx, exp.ID, tracker.RunOptions{Name: name, Tags: tags,
		Source: tracker.Source{Name: "flywheel trainer", Type: "JOB"}})
	return info.ID, err
}

func (a trackerAdapter) LogParams(ctx context.Context, id string, p map[string]string) error {
	ps := make([]tracker.Param, 0, len(p))
	for _, k := range sortedKeys(p) {
		ps = append(ps, tracker.Param{Key: k, Value: p[k]})
	}
	return a.t.LogBatch(ctx, id, nil, ps, nil)
}

func (a trackerAdapter) LogMetrics(ctx context.Context, id string, m map[string]float64) error {
	return a.LogStep(ctx, id, 0, m)
}

func (a trackerAdapter) LogStep(ctx context.Context, id string, step int64, m map[string]float64) error {
	ts := time.Now().UnixMilli()
	ms := make([]tracker.Metric, 0, len(m))
	for _, k := range sortedKeys(m) {
		ms = append(ms, tracker.Metric{Key: k, Value: m[k], Timestamp: ts, Step: step})
	}
	return a.t.LogBatch(ctx, id, ms, nil, nil)
}

func (a trackerAdapter) LogDataset(ctx context.Context, id string, d pipeline.DatasetRef) error {
	src, _ := json.Marshal(map[string]string{"uri": d.Source})
	profile, _ := json.Marshal(map[string]any{"num_rows": d.Rows, "sha256": d.Digest})
	return a.t.LogInputs(ctx, id, []tracker.Dataset{{Name: d.Name, Digest: tracker.ShortDigest(d.Digest), SourceType: "local",
		Source: string(src), Profile: string(profile), Context: d.Context}})
}

func (a trackerAdapter) LogArtifact(ctx context.Context, id, path string, r io.Reader) error {
	return a.t.LogArtifact(ctx, id, path, r)
}

func (a trackerAdapter) EndRun(ctx context.Context, id string, ok bool) error {
	status := tracker.StatusFinished
	if !ok {
		status = tracker.StatusFailed
	}
	return a.t.EndRun(ctx, id, status, time.Now())
}

func (a trackerAdapter) RegisterVersion(ctx context.Context, model, runID, artifactPath string) (string, error) {
	if err := a.t.CreateRegisteredModel(ctx, model); err != nil {
		return "", err
	}
	mv, err := a.t.CreateModelVersion(ctx, model, runID, artifactPath)
	return mv.Version, err
}

func (a trackerAdapter) SetAlias(ctx context.Context, model, alias, version string) error {
	return a.t.SetAlias(ctx, model, alias, version)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// loopTracker opens the experiment tracker of retraining runs from the
// tracking flags (SQLite, or MLflow with the SQLite fallback); nil with
// --track=false (the track step is then recorded as skipped). The caller
// closes the returned tracking and runs its syncer (tracking.runSyncer).
func loopTracker(ctx context.Context, f trainerFlags, log *slog.Logger) (*tracking, pipeline.Tracker, error) {
	if !f.track {
		return nil, nil, nil
	}
	if dir := filepath.Dir(f.tf.db); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, nil, fmt.Errorf("--tracking-db directory: %w", err)
		}
	}
	tr, err := f.tf.open(ctx, log)
	if err != nil {
		return nil, nil, err
	}
	return tr, trackerAdapter{t: tr, kind: tr.kind}, nil
}

// replayFeatures builds the feature function replay sends: with the
// ridership feature set the shared feature function, so replay sends exactly
// the training features; else the raw numeric columns in name order.
func replayFeatures(set string, rows []replay.Record) replay.FeatureFunc {
	if set == featuresRidership {
		return features.FromMap
	}
	var names []string
	if len(rows) > 0 {
		for n := range rows[0].Values {
			names = append(names, n)
		}
		slices.Sort(names)
	}
	return func(values map[string]float64, _ time.Time) ([]float64, error) {
		x := make([]float64, len(names))
		for i, n := range names {
			v, ok := values[n]
			if !ok {
				return nil, fmt.Errorf("missing value for %q", n)
			}
			x[i] = v
		}
		return x, nil
	}
}
