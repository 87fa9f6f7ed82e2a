package pipeline

import (
	"context"
	"io"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
)

// Row is one labelled example: its date, its feature vector in the
// champion card's feature order, and the true label.
type Row struct {
	Date     time.Time
	Features []float64
	Label    float64
}

// BaseData is the base training dataset (for ridership: data/chicago with
// the shared feature function). Names are the feature names of Rows' vectors.
type BaseData interface {
	Load(ctx context.Context) (*Base, error)
}

// Base is a loaded base dataset.
type Base struct {
	Name   string // e.g. "chicago"
	Source string // path or URI, for lineage
	Names  []string
	Rows   []Row
}

// Feedback is one labelled prediction exported by serve
// (GET /v1/feedback/export, one NDJSON object per line).
type Feedback struct {
	ID          string             `json:"id"`
	Model       string             `json:"model"`
	Version     *int64             `json:"version"`      // null when the prediction was not logged
	PredictedAt time.Time          `json:"predicted_at"` // zero when null
	LabelledAt  time.Time          `json:"labelled_at"`
	Features    map[string]float64 `json:"features"`
	Label       float64            `json:"label"`
	Prediction  float64            `json:"prediction"`
	Parameters  map[string]any     `json:"parameters"`
}

// FeedbackSource returns the labelled feedback of a model since a time (zero
// for all).
type FeedbackSource interface {
	Export(ctx context.Context, model string, since time.Time) ([]Feedback, error)
}

// FitRequest asks a Trainer for a candidate.
type FitRequest struct {
	// Dataset is a CSV file with a header: "date", the features in order,
	// then the target. Rows are in date order. An external trainer reads it.
	Dataset string
	// Rows are the same rows in memory, for trainers in this process.
	Rows      []Row
	OutputDir string // exists and is empty; the trainer writes model.onnx and model.json here
	Model     string // the model's name in the repository (the card's name)
	Features  []string
	Target    string
	Algorithm string
	Params    map[string]any
	Seed      int64
	Champion  *modelrepo.Card
	Log       io.Writer // trainer output, kept in the job and the tracker
}

// Trainer fits a candidate: on success OutputDir holds model.onnx and
// model.json (a card with at least the signature and the training metrics).
type Trainer interface {
	Fit(ctx context.Context, req FitRequest) error
}

// Predictor runs a model version directory on feature rows.
type Predictor interface {
	Predict(ctx context.Context, modelDir string, c *modelrepo.Card, x [][]float64) ([]float64, error)
}

// HistoryFile is the optional per-iteration history a Trainer may write into
// FitRequest.OutputDir: a JSON array of Iteration.
const HistoryFile = "history.json"

// StepPrefix prefixes logged iteration metrics (iter_train_rmse …), as
// `flywheel train` does, apart from the final metrics of the same name.
const StepPrefix = "iter_"

// Iteration is one training iteration (boosting round, epoch) and its metrics.
type Iteration struct {
	Iteration int64              `json:"iteration"`
	Metrics   map[string]float64 `json:"metrics"`
}

// Serving answers whether serve has a model version ready.
type Serving interface {
	VersionReady(ctx context.Context, model string, version int) (bool, error)
}
