package pipeline

import (
	"github.com/flywheel-ml/flywheel/internal/validate"
	"time"
)

// Config tunes the pipeline. Zero values mean the defaults of DefaultConfig.
type Config struct {
	Model       string        `yaml:"model"`        // the model name in the repository, e.g. ridership
	ModelsDir   string        `yaml:"models_dir"`   // the model repository serve watches (local-folder mode; unused with a Registry)
	Alias       string        `yaml:"alias"`        // the registry alias of the champion, moved to a promoted version
	WorkDir     string        `yaml:"work_dir"`     // per-job snapshots and candidates: <work_dir>/<job id>/
	Experiment  string        `yaml:"experiment"`   // tracker experiment
	WindowDays  int           `yaml:"window_days"`  // training window before the holdout; 0 = all rows
	HoldoutDays int           `yaml:"holdout_days"` // the freshest labelled days held out for evaluation
	MinHoldout  int           `yaml:"min_holdout"`  // fewest holdout rows to evaluate on
	Metric      string        `yaml:"metric"`       // gate metric, lower is better: mae or rmse
	Margin      float64       `yaml:"margin"`       // besides the bootstrap interval, the candidate's mean must beat the champion's by this fraction (0 = the interval decides)
	Threshold   float64       `yaml:"threshold"`    // absolute ceiling of the gate metric; 0 = the champion card's threshold
	BaseUntil   string        `yaml:"base_until"`   // last base-dataset date to use (YYYY-MM-DD); default: the champion's training window end
	ReadyWait   time.Duration `yaml:"ready_wait"`   // how long to wait for serve to report the new version ready
	ReadyPoll   time.Duration `yaml:"ready_poll"`
	// ThresholdMargin > 0 sets a promoted version's card thresholds (what
	// ModelErrorHigh compares its live error with, and the next gate's
	// ceiling) to this multiple of its holdout MAE and RMSE. 0 carries the
	// champion's thresholds over: the model's live-error objective, stable
	// across versions (a short holdout makes derived thresholds noisy).
	ThresholdMargin float64 `yaml:"threshold_margin"`
	// Algorithm and Params replace the champion card's algorithm and
	// hyper-parameters for every job (a job's own overrides still win); the
	// champion's params are dropped when the algorithm changes.
	Algorithm string         `yaml:"algorithm"`
	Params    map[string]any `yaml:"params"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Model:       "ridership",
		ModelsDir:   "models",
		Alias:       ChampionAlias,
		WorkDir:     "data/trainer",
		Experiment:  "flywheel-retraining",
		WindowDays:  0,
		HoldoutDays: 28,
		MinHoldout:  7,
		Metric:      "mae",
		Margin:      0,
		ReadyWait:   2 * time.Minute,
		ReadyPoll:   250 * time.Millisecond,
	}
}

// Validate checks the config and names the bad key.
func (c Config) Validate() error {
	var v validate.Errors
	v.If(c.Model == "", "model is empty")
	v.If(c.Alias == "", "alias is empty")
	v.If(c.WorkDir == "", "work_dir is empty")
	v.If(c.WindowDays < 0, "window_days %d is negative", c.WindowDays)
	v.If(c.HoldoutDays < 1, "holdout_days %d must be at least 1", c.HoldoutDays)
	v.If(c.MinHoldout < 1, "min_holdout %d must be at least 1", c.MinHoldout)
	v.If(c.Metric != "mae" && c.Metric != "rmse", "metric %q is not one of mae, rmse", c.Metric)
	v.If(c.Margin < 0 || c.Margin >= 1, "margin %v must be in [0, 1)", c.Margin)
	v.If(c.Threshold < 0, "threshold %v is negative", c.Threshold)
	v.If(c.ThresholdMargin != 0 && c.ThresholdMargin < 1, "threshold_margin %v must be 0 or at least 1", c.ThresholdMargin)
	if c.BaseUntil != "" {
		_, err := time.Parse(DateLayout, c.BaseUntil)
		v.If(err != nil, "base_until %q is not YYYY-MM-DD", c.BaseUntil)
	}
	v.If(c.ReadyWait <= 0 || c.ReadyPoll <= 0, "ready_wait %s and ready_poll %s must be positive", c.ReadyWait, c.ReadyPoll)
	return v.Err("")
}

// NaiveFeature is the feature holding the seasonal-naive forecast (the
// target 364 days earlier, train/features.Lag364Name): when the base data
// has it the gate rejects a candidate that does not beat it.
const NaiveFeature = "lag364"

// DateLayout is the date format of datasets and of the replay's "date" parameter.
const DateLayout = "2006-01-02"

// Overrides are the per-job knobs a manual request may set (job params JSON).
type Overrides struct {
	Algorithm  string         `json:"algorithm,omitempty"`
	Params     map[string]any `json:"params,omitempty"`
	WindowDays *int           `json:"window_days,omitempty"`
	Margin     *float64       `json:"margin,omitempty"`
	Threshold  *float64       `json:"threshold,omitempty"`
}

// Validate checks the overrides.
func (o Overrides) Validate() error {
	// The arguments are evaluated before If looks at the condition:
	// dereference only set pointers.
	var v validate.Errors
	if o.WindowDays != nil {
		v.If(*o.WindowDays < 0, "window_days %d is negative", *o.WindowDays)
	}
	if o.Threshold != nil {
		v.If(*o.Threshold < 0, "threshold %v is negative", *o.Threshold)
	}
	if o.Margin != nil {
		v.If(*o.Margin < 0 || *o.Margin >= 1, "margin %v must be in [0, 1)", *o.Margin)
	}
	return v.Err("")
}
