// Package train is Flywheel's trainer API: it fits one of the built-in
// algorithms (ridge, mlp, gbdt) on a Data split, evaluates it, exports it to
// ONNX and fills its model card; Publish then writes the version into a model
// repository atomically. `flywheel train` and the retraining pipeline both
// call it, and a tracker logs what it returns (Result.Params, Metrics,
// History) and what Config.Progress reports while it runs.
package train

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/train/eval"
	"github.com/flywheel-ml/flywheel/train/export"
	"github.com/flywheel-ml/flywheel/train/export/onnxpb"
	"github.com/flywheel-ml/flywheel/train/features"
	"github.com/flywheel-ml/flywheel/train/gbdt"
	"github.com/flywheel-ml/flywheel/train/mlp"
	"github.com/flywheel-ml/flywheel/train/ridge"
)

// The algorithms.
const (
	Ridge = "ridge"
	MLP   = "mlp"
	GBDT  = "gbdt"
)

// Algorithms lists the algorithm names.
func Algorithms() []string { return []string{Ridge, MLP, GBDT} }

// ErrUnknownAlgorithm is returned (wrapped) for an algorithm name not in Algorithms.
var ErrUnknownAlgorithm = errors.New("unknown algorithm")

// Params holds every algorithm's hyper-parameters; only the chosen
// algorithm's section is used. In YAML: `gbdt: {learning_rate: 0.05}` etc.
type Params struct {
	Ridge ridge.Config `yaml:"ridge" json:"ridge"`
	MLP   mlp.Config   `yaml:"mlp" json:"mlp"`
	GBDT  gbdt.Config  `yaml:"gbdt" json:"gbdt"`
}

// DefaultParams returns every algorithm's defaults.
func DefaultParams() Params {
	return Params{Ridge: ridge.DefaultConfig(), MLP: mlp.DefaultConfig(), GBDT: gbdt.DefaultConfig()}
}

// DecodeParams applies YAML to p strictly (unknown keys are errors). Sections
// absent from the YAML keep their values.
func DecodeParams(p *Params, yamlDoc []byte) error {
	if len(bytes.TrimSpace(yamlDoc)) == 0 {
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(yamlDoc))
	dec.KnownFields(true)
	if err := dec.Decode(p); err != nil {
		return fmt.Errorf("hyper-parameters: %w", err)
	}
	return nil
}

// Set applies one "key=value" override to the algorithm's section, e.g.
// Set("gbdt", "learning_rate=0.05") or Set("mlp", "hidden=[32,16]").
func (p *Params) Set(algorithm, kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("hyper-parameter %q: want key=value", kv)
	}
	k = strings.TrimSpace(k)
	if keys := p.Keys(algorithm); len(keys) > 0 && !slices.Contains(keys, k) {
		return fmt.Errorf("hyper-parameter %q: %s has no %q; its keys are %s", kv, algorithm, k, strings.Join(keys, ", "))
	}
	doc := fmt.Sprintf("%s:\n  %s: %s\n", algorithm, k, v)
	if err := DecodeParams(p, []byte(doc)); err != nil {
		return fmt.Errorf("hyper-parameter %q for %s: %w", kv, algorithm, err)
	}
	return nil
}

// Keys returns the hyper-parameter names of an algorithm's section (its YAML
// keys, in declaration order), or nil for an unknown algorithm.
func (p *Params) Keys(algorithm string) []string {
	v := reflect.ValueOf(p).Elem()
	for i := 0; i < v.NumField(); i++ {
		if name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ","); name == algorithm {
			t := v.Field(i).Type()
			var keys []string
			for j := 0; j < t.NumField(); j++ {
				if k, _, _ := strings.Cut(t.Field(j).Tag.Get("yaml"), ","); k != "" && k != "-" && t.Field(j).IsExported() {
					keys = append(keys, k)
				}
			}
			return keys
		}
	}
	return nil
}

// DefaultThresholdMargin is how far above the test MAE/RMSE the card's
// thresholds sit: live error above 1.25 × the offline figure is a problem.
const DefaultThresholdMargin = 1.25

// Config says what to train. Zero fields take DefaultConfig's values.
type Config struct {
	Name      string // model name, e.g. "ridership"
	Algorithm string // ridge, mlp or gbdt
	Params    Params // hyper-parameters (the chosen algorithm's section is used)
	Seed      int64  // drives every random choice; same seed, data and params → same bytes
	Data      *Data  // required: LoadData, FromDataset or in-memory examples

	ThresholdMargin float64 // card thresholds = margin × test metric (default 1.25)

	// RatioTo names a feature the model is fitted relative to: it learns
	// target ÷ feature and its output is multiplied back, in Go and in the
	// ONNX graph. The default, features.Level14Name (the four-week level 14
	// days back), lets trees follow a level above any they were trained on.
	// A name the data does not have, or "", fits the target itself.
	RatioTo string

	// ReferenceDays, when > 0, builds the card's drift reference from the
	// training rows of the last ReferenceDays days only (by Example.Date), so
	// a model retrained on a long history is compared with the regime it was
	// last fitted to rather than with its oldest years. 0 uses every row.
	ReferenceDays int

	// Lineage written to the card.
	GitCommit      string
	TrainerVersion string
	RunID          string // tracker run id, when tracked
	Tracker        string // "mlflow" or "sqlite", when tracked

	// Importance, when set, adds permutation feature importance on the test
	// rows to the metrics ("importance": feature → MAE increase).
	Importance bool

	// Progress, when set, is called after every iteration or epoch (from the
	// calling goroutine). A tracker logs Progress.Metrics as steps.
	Progress func(Progress)
	// Now is the clock for the card's created_at (default time.Now).
	Now func() time.Time
}

// DefaultConfig returns a config for the ridership model with gbdt.
func DefaultConfig() Config {
	return Config{Name: "ridership", Algorithm: GBDT, Params: DefaultParams(), Seed: 1, ThresholdMargin: DefaultThresholdMargin,
		RatioTo: features.Level14Name}
}

// Progress reports one iteration (boosting round or epoch) of a fit.
type Progress struct {
	Algorithm string
	Iteration int                // 1-based
	Total     int                // the maximum; early stopping may end sooner
	Metrics   map[string]float64 // e.g. train_rmse, valid_rmse
	Elapsed   time.Duration
	ETA       time.Duration // time left if every iteration runs
}

// Step is one entry of Result.History.
type Step struct {
	Iteration int                `json:"iteration"`
	Metrics   map[string]float64 `json:"metrics"`
}

// Validate checks the config; errors name the field.
func (c Config) Validate() error {
	if c.Name == "" || strings.ContainsAny(c.Name, `/\`) || strings.HasPrefix(c.Name, ".") {
		return fmt.Errorf("train: model name %q must be non-empty, without slashes, not starting with a dot", c.Name)
	}
	if c.ReferenceDays < 0 {
		return fmt.Errorf("train: reference days %d must not be negative", c.ReferenceDays)
	}
	switch c.Algorithm {
	case Ridge:
		return c.Params.Ridge.Validate()
	case MLP:
		return c.Params.MLP.Validate()
	case GBDT:
		return c.Params.GBDT.Validate()
	}
	return fmt.Errorf("train: %w %q (want one of %s)", ErrUnknownAlgorithm, c.Algorithm, strings.Join(Algorithms(), ", "))
}

// Predictor is a fitted model in Go.
type Predictor interface {
	Predict(x []float64) float64
}

// Result is a fitted, evaluated and exported model, ready to publish.
type Result struct {
	Algorithm   string
	Params      map[string]any                // the chosen algorithm's hyper-parameters, every one
	Seed        int64                         // the seed used
	Metrics     map[string]map[string]float64 // "train" / "test" → mae, rmse, mape, r2
	History     []Step                        // per iteration: train_rmse, valid_rmse (gbdt, mlp)
	Iterations  int                           // trees or epochs kept (0 for ridge)
	Importance  map[string]float64            // permutation importance on the test rows (Config.Importance)
	FitDuration time.Duration
	Model       Predictor
	ONNX        []byte          // model.onnx
	Card        *modelrepo.Card // model.json; Version is set by Publish

	// Set by Publish.
	Version int
	Dir     string // models/<name>/<version>
	Paths   []string
}

// Fit trains, evaluates and exports a model.
func Fit(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ThresholdMargin == 0 {
		cfg.ThresholdMargin = DefaultThresholdMargin
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ThresholdMargin < 1 {
		return nil, fmt.Errorf("train: threshold margin %v must be ≥ 1", cfg.ThresholdMargin)
	}
	if cfg.Data == nil {
		return nil, errNoData
	}
	data := *cfg.Data
	if err := data.validate(); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	F := len(data.FeatureNames)
	dow := -1
	for j, n := range data.FeatureNames {
		if n == features.DayOfWeekName {
			dow = j
		}
	}
	ratio := -1
	if cfg.RatioTo != "" {
		ratio = features.Index(data.FeatureNames, cfg.RatioTo)
	}
	X := make([][]float64, len(data.Train))
	y := make([]float64, len(data.Train))
	for i, e := range data.Train {
		X[i], y[i] = e.Features, e.Target
		if ratio >= 0 {
			if b := e.Features[ratio]; !(b > 0) {
				return nil, fmt.Errorf("train: training row %d (%s): ratio feature %q is %v, want > 0", i, e.Date.Format(features.DateLayout), cfg.RatioTo, b)
			}
			y[i] /= e.Features[ratio]
		}
	}

	start := time.Now() // durations use the real clock; cfg.Now only stamps the card
	res := &Result{Algorithm: cfg.Algorithm, Seed: cfg.Seed}
	report := func(it, total int, m map[string]float64) {
		res.History = append(res.History, Step{Iteration: it, Metrics: m})
		if cfg.Progress != nil {
			el := time.Since(start)
			eta := time.Duration(float64(el) / float64(it) * float64(total-it))
			cfg.Progress(Progress{Algorithm: cfg.Algorithm, Iteration: it, Total: total, Metrics: m, Elapsed: el, ETA: eta})
		}
	}
	opts := export.Options{
		GraphName:       cfg.Name + "_" + cfg.Algorithm,
		ProducerVersion: cfg.TrainerVersion,
		Metadata: map[string]string{
			"algorithm": cfg.Algorithm,
			"features":  strings.Join(data.FeatureNames, ","),
			"target":    features.Target,
		},
	}
	var (
		model any
		err   error
	)
	seed := uint64(cfg.Seed)
	switch cfg.Algorithm {
	case Ridge:
		var m *ridge.Model
		m, err = ridge.Fit(ctx, cfg.Params.Ridge, X, y, dow, 7)
		if err == nil {
			res.Model, model = m, m
			res.Params = toMap(cfg.Params.Ridge)
		}
	case MLP:
		var m *mlp.Model
		m, _, err = mlp.Fit(ctx, cfg.Params.MLP, X, y, dow, 7, seed, func(s mlp.Step, total int) {
			report(s.Epoch, total, map[string]float64{"train_rmse": s.TrainRMSE, "valid_rmse": s.ValidRMSE})
		})
		if err == nil {
			res.Model, model = m, m
			res.Iterations = m.BestEpoch
			res.Params = toMap(cfg.Params.MLP)
		}
	case GBDT:
		var m *gbdt.Model
		m, _, err = gbdt.Fit(ctx, cfg.Params.GBDT, X, y, seed, func(s gbdt.Step, total int) {
			met := map[string]float64{"train_rmse": s.TrainRMSE}
			if s.ValidRMSE == s.ValidRMSE { // not NaN
				met["valid_rmse"] = s.ValidRMSE
			}
			report(s.Iteration, total, met)
		})
		if err == nil {
			res.Model, model = m, m
			res.Iterations = len(m.Trees)
			res.Params = toMap(cfg.Params.GBDT)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("train: fitting %s: %w", cfg.Algorithm, err)
	}
	res.FitDuration = time.Since(start)
	ratioTo := ""
	if ratio >= 0 {
		ratioTo = cfg.RatioTo
		res.Model = RatioModel{Model: res.Model, Column: ratio}
		opts.Metadata["ratio_to"] = ratioTo
	}

	// Evaluate: the model, the naive baselines on the same rows, the report.
	trainPred := predictAll(res.Model, data.Train)
	testPred := predictAll(res.Model, data.Test)
	trainM := eval.Regression(targets(data.Train), trainPred)
	testM := eval.Regression(targets(data.Test), testPred)
	res.Metrics = map[string]map[string]float64{"train": trainM.Map(), "test": testM.Map()}
	for k, v := range Report(data.Test, testPred) {
		res.Metrics["test"][k] = v
	}
	for name, m := range Baselines(data.FeatureNames, data.Test) {
		res.Metrics["test_"+name] = m
	}
	if cfg.Importance {
		res.Importance = Importance(res.Model, data.FeatureNames, data.Test, cfg.Seed)
	}

	// Export.
	var proto *onnxpb.ModelProto
	switch m := model.(type) {
	case *ridge.Model:
		proto, err = export.Ridge(m, F, opts)
	case *mlp.Model:
		proto, err = export.MLP(m, F, opts)
	case *gbdt.Model:
		proto, err = export.GBDT(m, opts)
	}
	if err == nil && ratio >= 0 {
		err = export.MultiplyByInput(proto, ratio, F)
	}
	if res.ONNX, err = marshal(proto, err); err != nil {
		return nil, err
	}

	// Card.
	refRows := referenceRows(data.Train, cfg.ReferenceDays)
	refX, refPred := make([][]float64, len(refRows)), make([]float64, len(refRows))
	for k, i := range refRows {
		refX[k], refPred[k] = data.Train[i].Features, trainPred[i]
	}
	ref, err := modelrepo.NewReference(data.FeatureNames, refX, refPred)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	trFrom, trUntil := span(data.Train)
	teFrom, teUntil := span(data.Test)
	res.Card = &modelrepo.Card{
		Name:      cfg.Name,
		CreatedAt: cfg.Now().UTC().Truncate(time.Second),
		Task:      "regression",
		Inputs: []modelrepo.Tensor{{Name: export.InputName, DataType: "FP32", Shape: []int64{-1, int64(F)},
			Features: append([]string(nil), data.FeatureNames...)}},
		Outputs:    []modelrepo.Tensor{{Name: export.OutputName, DataType: "FP32", Shape: []int64{-1, 1}}},
		Target:     features.Target,
		TargetUnit: features.TargetUnit,
		Training: modelrepo.Training{
			Algorithm: cfg.Algorithm, Params: res.Params, Seed: cfg.Seed, RunID: cfg.RunID, Tracker: cfg.Tracker,
			Dataset: modelrepo.Dataset{Name: data.Name, Digest: data.TrainDigest, Rows: len(data.Train),
				From: trFrom.Format(features.DateLayout), Until: trUntil.Format(features.DateLayout), Source: data.Source},
			TestDataset: &modelrepo.Dataset{Name: data.Name, Digest: data.TestDigest, Rows: len(data.Test),
				From: teFrom.Format(features.DateLayout), Until: teUntil.Format(features.DateLayout), Source: data.Source},
			GitCommit: cfg.GitCommit, TrainerVersion: cfg.TrainerVersion,
			Weather: data.Weather, RatioTo: ratioTo,
		},
		Metrics: res.Metrics,
		Thresholds: map[string]float64{
			"mae":  round6(cfg.ThresholdMargin * testM.MAE),
			"rmse": round6(cfg.ThresholdMargin * testM.RMSE),
		},
		Reference:  ref,
		Importance: roundAll(res.Importance),
	}
	return res, nil
}

// referenceRows returns the indices of the rows that make the drift
// reference: every row, or those within days of the newest row's date.
func referenceRows(rows []Example, days int) []int {
	var newest time.Time
	for _, e := range rows {
		if e.Date.After(newest) {
			newest = e.Date
		}
	}
	from := newest.AddDate(0, 0, -days)
	idx := make([]int, 0, len(rows))
	for i, e := range rows {
		if days <= 0 || e.Date.After(from) {
			idx = append(idx, i)
		}
	}
	return idx
}

func round6(v float64) float64 { return math.Round(v*1e6) / 1e6 }

func roundAll(m map[string]float64) map[string]float64 {
	if m == nil {
		return nil
	}
	out := make(map[string]float64, len(m))
	for k, v := range m {
		out[k] = round6(v)
	}
	return out
}

func marshal(m *onnxpb.ModelProto, err error) ([]byte, error) {
	if err != nil {
		return nil, fmt.Errorf("train: exporting ONNX: %w", err)
	}
	return export.Marshal(m)
}

func predictAll(p Predictor, ex []Example) []float64 {
	out := make([]float64, len(ex))
	for i, e := range ex {
		out[i] = p.Predict(e.Features)
	}
	return out
}

func targets(ex []Example) []float64 {
	out := make([]float64, len(ex))
	for i, e := range ex {
		out[i] = e.Target
	}
	return out
}

// toMap turns an algorithm config into the card's params map (its JSON form).
func toMap(v any) map[string]any {
	b, _ := json.Marshal(v)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// FlatParams renders params as strings, e.g. for a tracker's log-batch.
func FlatParams(params map[string]any) map[string]string {
	out := make(map[string]string, len(params))
	for k, v := range params {
		switch v := v.(type) {
		case string:
			out[k] = v
		default:
			b, _ := json.Marshal(v)
			out[k] = string(b)
		}
	}
	return out
}
