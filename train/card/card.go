// Package card defines the model card, model.json, that travels with every
// model version in the repository: its signature, feature names, lineage,
// metrics, thresholds and the reference distributions that drift is measured
// against. The trainer writes it; serve, drift and the pipeline read it.
package card

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"
)

// FileName is the card's file name inside a version directory.
const FileName = "model.json"

// Card is the content of model.json.
type Card struct {
	Name       string                        `json:"name"`
	Version    int                           `json:"version"`
	CreatedAt  time.Time                     `json:"created_at"`
	Task       string                        `json:"task"` // "regression" or "classification"
	Inputs     []Tensor                      `json:"inputs"`
	Outputs    []Tensor                      `json:"outputs"`
	Target     string                        `json:"target,omitempty"`
	Training   Training                      `json:"training"`
	Metrics    map[string]map[string]float64 `json:"metrics,omitempty"`    // split → metric → value, e.g. test.mae
	Thresholds map[string]float64            `json:"thresholds,omitempty"` // metric → highest acceptable value (e.g. mae)
	Reference  *Reference                    `json:"reference,omitempty"`
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
	Algorithm      string         `json:"algorithm"`
	Params         map[string]any `json:"params"`
	Seed           int64          `json:"seed"`
	RunID          string         `json:"run_id,omitempty"`
	Tracker        string         `json:"tracker,omitempty"` // "mlflow" or "sqlite"
	Dataset        Dataset        `json:"dataset"`
	TestDataset    *Dataset       `json:"test_dataset,omitempty"` // the rows the test metrics come from
	GitCommit      string         `json:"git_commit,omitempty"`
	TrainerVersion string         `json:"trainer_version,omitempty"`
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

// Histogram is a binned distribution: len(Edges) == len(Proportions)+1 and
// the proportions sum to 1. Values below Edges[0] count in the first bin,
// values above the last edge in the last bin.
type Histogram struct {
	Edges       []float64 `json:"edges"`
	Proportions []float64 `json:"proportions"`
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
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("name is empty"))
	}
	if c.Version < 0 {
		errs = append(errs, fmt.Errorf("version %d is negative", c.Version))
	}
	if len(c.Inputs) == 0 {
		errs = append(errs, errors.New("inputs is empty"))
	}
	if len(c.Outputs) == 0 {
		errs = append(errs, errors.New("outputs is empty"))
	}
	for _, in := range c.Inputs {
		if len(in.Features) > 0 && (len(in.Shape) != 2 || (in.Shape[1] != -1 && int(in.Shape[1]) != len(in.Features))) {
			errs = append(errs, fmt.Errorf("input %q: %d features do not match shape %v", in.Name, len(in.Features), in.Shape))
		}
	}
	if c.Reference != nil {
		for name, h := range c.Reference.Features {
			if err := h.Validate(); err != nil {
				errs = append(errs, fmt.Errorf("reference of feature %q: %w", name, err))
			}
		}
		if c.Reference.Prediction != nil {
			if err := c.Reference.Prediction.Validate(); err != nil {
				errs = append(errs, fmt.Errorf("reference of prediction: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// Validate checks a histogram's shape.
func (h Histogram) Validate() error {
	if len(h.Proportions) == 0 || len(h.Edges) != len(h.Proportions)+1 {
		return fmt.Errorf("%d edges for %d proportions (want proportions+1)", len(h.Edges), len(h.Proportions))
	}
	for i := 1; i < len(h.Edges); i++ {
		if h.Edges[i] < h.Edges[i-1] {
			return fmt.Errorf("edges not sorted at %d", i)
		}
	}
	return nil
}

// Load reads and validates a card file.
func Load(path string) (*Card, error) {
	b, err := os.ReadFile(path)
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

// Bin returns the index of the bin that holds v: the last i with
// Edges[i] ≤ v, clamped to [0, len(Proportions)-1]. So bin i holds
// Edges[i] ≤ v < Edges[i+1], the last bin also its upper edge (and anything
// above), the first bin anything below Edges[0]. With a repeated last edge
// (e.g. [0, 1, 1]) the last bin holds exactly that value.
func (h Histogram) Bin(v float64) int {
	n := len(h.Proportions)
	i := sort.Search(len(h.Edges), func(i int) bool { return h.Edges[i] > v }) - 1
	if i < 0 {
		return 0
	}
	if i >= n {
		return n - 1
	}
	return i
}
