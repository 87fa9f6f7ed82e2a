package train

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/train/features"
	"github.com/flywheel-ml/flywheel/train/pipeline"
)

// PipelineTrainer is the built-in trainer of the retraining pipeline: it
// fits a candidate with Fit on the snapshot's training rows, in memory, and
// writes model.onnx, model.json and the per-iteration history
// (pipeline.HistoryFile) the track step logs as iter_* steps. The newest
// rows are trained on too: every k-th row (k = 1/TestFraction) scores the
// card's test metrics instead, while the pipeline's own holdout (the
// freshest labelled days, never given to the trainer) decides promotion.
type PipelineTrainer struct {
	TestFraction   float64 // in (0, 1)
	ReferenceDays  int     // Config.ReferenceDays
	TrainerVersion string  // for the card's lineage
}

var _ pipeline.Trainer = PipelineTrainer{}

// Validate checks the options.
func (b PipelineTrainer) Validate() error {
	if b.TestFraction <= 0 || b.TestFraction >= 1 {
		return fmt.Errorf("test fraction %v must be in (0, 1)", b.TestFraction)
	}
	if b.ReferenceDays < 0 {
		return fmt.Errorf("reference days %d is negative", b.ReferenceDays)
	}
	return nil
}

// Fit implements pipeline.Trainer.
func (b PipelineTrainer) Fit(ctx context.Context, req pipeline.FitRequest) error {
	if err := b.Validate(); err != nil {
		return err
	}
	if len(req.Rows) < 2 {
		return fmt.Errorf("%d training rows, need at least 2", len(req.Rows))
	}
	rows := make([]Example, len(req.Rows))
	for i, r := range req.Rows {
		if len(r.Features) != len(req.Features) {
			return fmt.Errorf("training row %d has %d features, want %d", i, len(r.Features), len(req.Features))
		}
		rows[i] = Example{Date: r.Date, Features: r.Features, Target: r.Label}
	}
	trainRows, testRows := interleave(rows, b.TestFraction)
	params := DefaultParams()
	if err := params.Apply(req.Algorithm, req.Params); err != nil {
		return err
	}
	cfg := DefaultConfig()
	cfg.Name, cfg.Algorithm, cfg.Params, cfg.Seed = req.Model, req.Algorithm, params, req.Seed
	cfg.TrainerVersion = b.TrainerVersion
	cfg.ReferenceDays = b.ReferenceDays
	if req.Champion != nil {
		cfg.GitCommit = req.Champion.Training.GitCommit
	}
	cfg.Data = &Data{Name: "snapshot", Source: req.Dataset, FeatureNames: req.Features, Train: trainRows, Test: testRows}
	var hist []pipeline.Iteration
	last := time.Time{}
	cfg.Progress = func(p Progress) {
		hist = append(hist, pipeline.Iteration{Iteration: int64(p.Iteration), Metrics: p.Metrics})
		if time.Since(last) >= time.Second || p.Iteration == p.Total {
			last = time.Now()
			fmt.Fprintf(req.Log, "%s %d/%d%s\n", p.Algorithm, p.Iteration, p.Total, formatMetrics(p.Metrics))
		}
	}
	fmt.Fprintf(req.Log, "built-in trainer: %s on %d rows %s..%s (%d interleaved rows score the card's test metrics), params %v\n",
		req.Algorithm, len(trainRows), day(rows[0].Date), day(rows[len(rows)-1].Date), len(testRows), FlatParams(req.Params))
	res, err := Fit(ctx, cfg)
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

// Apply sets the hyper-parameters of one algorithm from a map (a card's
// training.params, a job's overrides), strictly: a key the algorithm does
// not have, or a value of the wrong type, is an error naming it.
func (p *Params) Apply(algorithm string, m map[string]any) error {
	if len(m) == 0 {
		return nil
	}
	var dst any
	switch algorithm {
	case Ridge:
		dst = &p.Ridge
	case MLP:
		dst = &p.MLP
	case GBDT:
		dst = &p.GBDT
	default:
		return fmt.Errorf("hyper-parameters: algorithm %q is not one of %s", algorithm, strings.Join(Algorithms(), ", "))
	}
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("hyper-parameters of %s: %w", algorithm, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("hyper-parameters of %s: %s must be a %s, got %s", algorithm, te.Field, te.Type, te.Value)
		}
		return fmt.Errorf("hyper-parameters of %s: %w", algorithm, err)
	}
	return nil
}

// interleave splits rows into training and test rows: every k-th row
// (k = 1/fraction) is a test row, so every period — the newest labels
// included — is trained on.
func interleave(rows []Example, fraction float64) (trainRows, testRows []Example) {
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
