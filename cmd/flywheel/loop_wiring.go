package main

// The parts of the retraining loop that other areas provide (see
// docs/loop-wiring.md):
//   loopBase       → train/features (the numeric columns, calendar, yearly lags from the dataset)
//   loopTrainer    → the built-in train.Fit, or --external-cmd
//   loopTracker    → tracker/localstore, or tracker/mlflow with the local-store fallback
//                    (a tracker.Recorder the pipeline uses directly)
//   replayFeatures → train/features.Set.FromMap with the replayed rows' history

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flywheel-ml/flywheel/train"
	"github.com/flywheel-ml/flywheel/train/dataset"
	"github.com/flywheel-ml/flywheel/train/external"
	"github.com/flywheel-ml/flywheel/train/features"
	"github.com/flywheel-ml/flywheel/train/pipeline"
	"github.com/flywheel-ml/flywheel/train/replay"
)

// Feature sets (--features of trainer and replay).
const (
	// featuresRidership is train/features' default set: the dataset's 48
	// numeric columns, then the calendar features derived from the date and
	// the target's yearly lags — what the ridership model serves.
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
	return ridershipBase{path: f.data, target: f.target}
}

// ridershipBase is the dataset through train/features' default set, its
// yearly lags looked up in the dataset itself; days without a year of
// history (the first 405) are left out.
type ridershipBase struct{ path, target string }

func (b ridershipBase) Load(ctx context.Context) (*pipeline.Base, error) {
	d, err := dataset.Load(b.path)
	if err != nil {
		return nil, err
	}
	set := d.FeatureSet(features.WeatherObserved)
	base, err := pipeline.CSVBase{Path: b.path, Target: b.target, Names: set.Names(), Features: set.FromMap}.Load(ctx)
	if err != nil {
		return nil, err
	}
	rows := base.Rows[:0]
	for _, r := range base.Rows {
		if set.HasLags(r.Date) {
			rows = append(rows, r)
		}
	}
	base.Rows = rows
	return base, nil
}

// loopTrainer is the candidate trainer: the built-in Go trainer, or the
// external command when --external-cmd is set.
func loopTrainer(f trainerFlags) (pipeline.Trainer, error) {
	if cmd := strings.Fields(f.externalCmd); len(cmd) > 0 {
		return &external.Trainer{Command: cmd, Timeout: f.externalTimeout}, nil
	}
	t := train.PipelineTrainer{TestFraction: f.testFraction, ReferenceDays: f.referenceDays, TrainerVersion: "flywheel trainer " + version}
	if f.testFraction <= 0 || f.testFraction >= 1 {
		return nil, usageError{fmt.Errorf("--test-fraction %v must be in (0, 1)", f.testFraction)}
	}
	if err := t.Validate(); err != nil {
		return nil, usageError{err}
	}
	return t, nil
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

// loopTracker opens the experiment tracker of retraining runs from the
// tracking flags (SQLite, or MLflow with the SQLite fallback); nil with
// --track=false (the track step is then recorded as skipped). The caller
// closes the returned tracking and runs its syncer (tracking.runSyncer).
func loopTracker(ctx context.Context, f trainerFlags, log *slog.Logger) (*tracking, error) {
	if !f.track {
		return nil, nil
	}
	f.tf.shared = f.database
	return f.tf.open(ctx, log)
}

// replayFeatures builds the feature function replay sends: with the
// ridership feature set the shared feature function, so replay sends exactly
// the training features; else the raw numeric columns in name order.
func replayFeatures(set string, rows []replay.Record) replay.FeatureFunc {
	if set == featuresRidership {
		h := features.History{}
		for _, r := range rows {
			h.Add(r.Date, r.Label)
		}
		return features.Set{History: h}.FromMap
	}
	var names []string
	if len(rows) > 0 {
		names = slices.Sorted(maps.Keys(rows[0].Values))
	}
	return func(values map[string]float64, _ time.Time) ([]float64, error) {
		return features.Ordered(values, names)
	}
}
