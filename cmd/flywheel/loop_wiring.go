package main

// The parts of the retraining loop that other areas provide. Each function
// is the one place to switch when they are merged (see the report of issue 6):
//   loopBase      → train/dataset + train/features (derived dow, holiday)
//   loopTrainer   → the built-in train.Fit when --external-cmd is empty
//   loopTracker   → tracker/sqlite or tracker/mlflow behind pipeline.Tracker
//   replayFeatures → train/features.FromMap

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/flywheel-ml/flywheel/train/external"
	"github.com/flywheel-ml/flywheel/train/pipeline"
	"github.com/flywheel-ml/flywheel/train/replay"
)

// loopBase is the base dataset of retraining. Interim: the CSV's numeric
// columns are the features. With train/features:
// pipeline.CSVBase{Path: f.data, Target: f.target, Names: features.Names(), Features: features.FromMap}.
func loopBase(f trainerFlags) pipeline.BaseData {
	return pipeline.CSVBase{Path: f.data, Target: f.target}
}

// loopTrainer is the candidate trainer: the external command. The built-in Go
// trainer (train.Fit) becomes the default when --external-cmd is empty.
func loopTrainer(f trainerFlags) (pipeline.Trainer, error) {
	cmd := strings.Fields(f.externalCmd)
	if len(cmd) == 0 {
		return nil, usageError{errors.New("--external-cmd is required (the built-in trainer is not wired yet)")}
	}
	return &external.Trainer{Command: cmd, Timeout: f.externalTimeout}, nil
}

// loopTracker is the experiment tracker; nil records the track step as
// skipped. Interim: none.
func loopTracker(_ context.Context, _ trainerFlags) (pipeline.Tracker, error) {
	return nil, nil
}

// replayFeatures builds the feature function replay sends. Interim: the raw
// numeric columns in name order; with train/features it is features.FromMap,
// so replay sends exactly the training features.
func replayFeatures(rows []replay.Record) replay.FeatureFunc {
	var names []string
	if len(rows) > 0 {
		for n := range rows[0].Values {
			names = append(names, n)
		}
		sort.Strings(names)
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
