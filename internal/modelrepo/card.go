package modelrepo

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/flywheel-ml/flywheel/internal/validate"
)

// Card is the model card, model.json, that travels with every model
// version: its signature, feature names, lineage, metrics, thresholds and
// the reference distributions that drift is measured against. The trainer
// writes it; serve, drift and the pipeline read it.
type Card struct {
	Name       string                        `json:"name"`
	Version    int                           `json:"version"`
	CreatedAt  time.Time                     `json:"created_at"`
	Task       string                        `json:"task"` // "regression" or "classification"
	Inputs     []Tensor                      `json:"inputs"`
	Outputs    []Tensor                      `json:"outputs"`
	Target     string                        `json:"target,omitempty"`
	TargetUnit string                        `json:"target_unit,omitempty"` // e.g. "thousands of riders"
	Training   Training                      `json:"training"`
	Metrics    map[string]map[string]float64 `json:"metrics,omitempty"`    // split → metric → value, e.g. test.mae
	Thresholds map[string]float64            `json:"thresholds,omitempty"` // metric → highest acceptable value (e.g. mae)
	Reference  *Reference                    `json:"reference,omitempty"`
	Interval   *Interval                     `json:"interval,omitempty"`
	// Importance is permutation feature importance on the test rows:
	// feature → rise in MAE when its column is shuffled.
	Importance map[string]float64 `json:"importance,omitempty"`
}

// Tensor is one input or output of the graph. Features names the columns of
// a 2-D input, in order.
type Tensor struct {
	Name     string   `json:"name"`
	DataType string   `json:"datatype"` // OIP datatype: FP32, INT64, BYTES, …
	Shape    []int64  `json:"shape"`    // -1 for a dynamic dimension
	Features []string `json:"features,omitempty"`
}

// Training is the lineage of a model version.
type Training struct {
	Algorithm string         `json:"algorithm"`
	Params    map[string]any `json:"params"`
	Seed      int64          `json:"seed"`
	RunID     string         `json:"run_id,omitempty"`
	Tracker   string         `json:"tracker,omitempty"` // "mlflow" or "sqlite"
	// TrackerState is "unsynced" when, at publish time, the run was
	// complete only in the local SQLite store (MLflow unreachable);
	// `flywheel runs sync` replays it.
	TrackerState string `json:"tracker_state,omitempty"`
	// RegistryVersion is the tracker registry's number of this version;
	// the repository takes it as Version unless that directory was taken.
	RegistryVersion string   `json:"registry_version,omitempty"`
	Dataset         Dataset  `json:"dataset"`
	TestDataset     *Dataset `json:"test_dataset,omitempty"` // the rows the test metrics come from
	GitCommit       string   `json:"git_commit,omitempty"`
	TrainerVersion  string   `json:"trainer_version,omitempty"`
	// Weather is the feature set's weather choice ("observed" or "none").
	Weather string `json:"weather,omitempty"`
	// RatioTo names the feature the model's raw output is multiplied by (it
	// was fitted to target ÷ that feature); "" when it predicts the target.
	RatioTo string `json:"ratio_to,omitempty"`
	// Selection is how the algorithm and its iterations were chosen: a
	// rolling-origin backtest inside the training range (never the test rows).
	Selection *Selection `json:"selection,omitempty"`
}

// Selection records a rolling-origin backtest: each fold is one period of
// the training range, fitted on everything before it.
type Selection struct {
	Method string `json:"method"` // e.g. "rolling-origin backtest, 3 folds of 364 days"
	// Candidates maps an algorithm to its fold metrics: mae_mean, mae_sd,
	// bias_mean, iterations, and the baselines' mae_mean on the same folds.
	Candidates map[string]map[string]float64 `json:"candidates"`
	Chosen     string                        `json:"chosen"`
}

// Interval is a prediction interval served from the card: prediction ±
// HalfWidth covers the truth with probability Level (split conformal: the
// Level-quantile of absolute errors on the last backtest fold).
type Interval struct {
	Level     float64 `json:"level"`
	HalfWidth float64 `json:"half_width"`
	Method    string  `json:"method"`
	Coverage  float64 `json:"coverage_test"` // share of the test rows inside the interval
}

// Dataset identifies the exact data a model was trained on.
type Dataset struct {
	Name   string `json:"name"`
	Digest string `json:"digest"` // "sha256:…" of the file plus the row range
	Rows   int    `json:"rows"`
	From   string `json:"from,omitempty"`  // first date used, YYYY-MM-DD
	Until  string `json:"until,omitempty"` // last date used, YYYY-MM-DD
	Source string `json:"source,omitempty"`
}

// Reference holds the training distribution of every input feature and of
// the prediction, as histograms over quantile bin edges.
type Reference struct {
	Features   map[string]Histogram `json:"features"`
	Prediction *Histogram           `json:"prediction,omitempty"`
}

// FeatureNames returns the named features of the first input, or nil.
func (c *Card) FeatureNames() []string {
	if len(c.Inputs) == 0 {
		return nil
	}
	return c.Inputs[0].Features
}

// Validate checks the card's internal consistency.
func (c *Card) Validate() error {
	var v validate.Errors
	v.If(c.Name == "", "name is empty")
	v.If(c.Version < 0, "version %d is negative", c.Version)
	v.If(len(c.Inputs) == 0, "inputs is empty")
	v.If(len(c.Outputs) == 0, "outputs is empty")
	for _, in := range c.Inputs {
		v.If(len(in.Features) > 0 && (len(in.Shape) != 2 || (in.Shape[1] != -1 && int(in.Shape[1]) != len(in.Features))), "input %q: %d features do not match shape %v", in.Name, len(in.Features), in.Shape)
	}
	if c.Reference != nil {
		for name, h := range c.Reference.Features {
			v.Add(fmt.Sprintf("reference of feature %q", name), h.Validate())
		}
		if c.Reference.Prediction != nil {
			v.Add("reference of prediction", c.Reference.Prediction.Validate())
		}
	}
	return v.Err("")
}

// LoadCard reads and validates a model card file.
func LoadCard(path string) (*Card, error) {
	b, err := ReadRegular(path, MaxSmallBytes)
	if err != nil {
		return nil, fmt.Errorf("reading model card: %w", err)
	}
	var c Card
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("parsing model card %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("model card %s: %w", path, err)
	}
	return &c, nil
}

// Write stores the card as indented JSON at path.
func (c *Card) Write(path string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding model card: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing model card: %w", err)
	}
	return nil
}
