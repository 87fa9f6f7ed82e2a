package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/flywheel-ml/flywheel/internal/modelrepo"
	"github.com/flywheel-ml/flywheel/train/eval"
	"github.com/flywheel-ml/flywheel/train/features"
	"github.com/flywheel-ml/flywheel/train/gbdt"
)

// Backtest configures a rolling-origin backtest inside the training rows:
// the newest Folds periods of FoldDays days are each scored by a model
// fitted on every training row before the period. It chooses the algorithm,
// GBDT's number of trees (the count with the lowest mean fold MAE: early
// stopping on time-ordered folds, never on the test rows) and the width of
// the prediction interval (split conformal on the last fold).
type Backtest struct {
	Folds    int     // periods scored (default 3)
	FoldDays int     // days per period (default 364: whole weeks, one year)
	Seeds    []int64 // seeds each fold is fitted with (default: the config's seed)
	Level    float64 // prediction interval coverage (default 0.9)
}

// DefaultBacktest returns three one-year folds, one seed, a 90 % interval.
func DefaultBacktest() Backtest { return Backtest{Folds: 3, FoldDays: 364, Level: 0.9} }

// Fold is one scored period.
type Fold struct {
	From, Until time.Time
	TrainRows   int
	Seed        int64
	MAE, Bias   float64
	Baselines   map[string]float64 // baseline → MAE on the same rows
}

// BacktestResult is one algorithm's backtest.
type BacktestResult struct {
	Algorithm  string
	Folds      []Fold
	MAEMean    float64 // over folds and seeds
	MAESD      float64 // sample standard deviation over folds and seeds
	BiasMean   float64
	Baselines  map[string]float64 // baseline → mean fold MAE
	Iterations int                // gbdt: the tree count chosen; 0 otherwise
	// HalfWidth is the split-conformal half-width of the Level interval from
	// the last fold's absolute errors (first seed).
	HalfWidth float64
	Level     float64
}

// Metrics returns the result as the card's and tracker's "backtest" metrics.
func (b *BacktestResult) Metrics() map[string]float64 {
	m := map[string]float64{"mae_mean": b.MAEMean, "mae_sd": b.MAESD, "bias_mean": b.BiasMean,
		"folds": float64(len(b.Folds)), "interval_half_width": b.HalfWidth}
	if b.Iterations > 0 {
		m["iterations"] = float64(b.Iterations)
	}
	for k, v := range b.Baselines {
		m[k+"_mae_mean"] = v
	}
	return m
}

// Tune returns cfg with the backtest's choices applied: for gbdt, early
// stopping off and the chosen number of trees.
func (b *BacktestResult) Tune(cfg Config) Config {
	if cfg.Algorithm == GBDT && b.Iterations > 0 {
		cfg.Params.GBDT.EarlyStopping = false
		cfg.Params.GBDT.Iterations = b.Iterations
	}
	return cfg
}

// RunBacktest backtests cfg (its Data.Train rows; Data.Test is not used).
func RunBacktest(ctx context.Context, cfg Config, bt Backtest) (*BacktestResult, error) {
	if bt.Folds == 0 {
		bt.Folds = 3
	}
	if bt.FoldDays == 0 {
		bt.FoldDays = 364
	}
	if bt.Level == 0 {
		bt.Level = 0.9
	}
	if len(bt.Seeds) == 0 {
		bt.Seeds = []int64{cfg.Seed}
	}
	if bt.Folds < 1 || bt.FoldDays < 7 || !(bt.Level > 0 && bt.Level < 1) {
		return nil, fmt.Errorf("backtest: %d folds of %d days at level %v: want ≥ 1 fold of ≥ 7 days, level in (0, 1)", bt.Folds, bt.FoldDays, bt.Level)
	}
	if cfg.Data == nil {
		return nil, errNoData
	}
	rows := append([]Example(nil), cfg.Data.Train...)
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Date.Before(rows[j].Date) })
	if len(rows) == 0 {
		return nil, fmt.Errorf("backtest: %w", ErrNoRows)
	}
	names := cfg.Data.FeatureNames
	if names == nil {
		names = features.Names()
	}
	newest := rows[len(rows)-1].Date
	tree := cfg.Algorithm == GBDT
	if tree {
		cfg.Params.GBDT.EarlyStopping = false // the folds pick the tree count
	}
	res := &BacktestResult{Algorithm: cfg.Algorithm, Baselines: map[string]float64{}, Level: bt.Level}
	type fit struct {
		fold  Fold
		valid []Example
		curve []float64 // gbdt: fold MAE after each tree
		pred  []float64
		model Predictor
	}
	var fits []fit
	for k := bt.Folds - 1; k >= 0; k-- { // oldest fold first
		until := newest.AddDate(0, 0, -k*bt.FoldDays)
		from := until.AddDate(0, 0, -bt.FoldDays+1)
		var tr, va []Example
		for _, e := range rows {
			switch {
			case e.Date.Before(from):
				tr = append(tr, e)
			case !e.Date.After(until):
				va = append(va, e)
			}
		}
		if len(tr) == 0 || len(va) == 0 {
			return nil, fmt.Errorf("backtest: fold %s … %s has %d training and %d scored rows: %w",
				from.Format(features.DateLayout), until.Format(features.DateLayout), len(tr), len(va), ErrNoRows)
		}
		for _, seed := range bt.Seeds {
			c := cfg
			c.Seed, c.Progress, c.Importance = seed, nil, false
			d := *cfg.Data
			d.Train, d.Test, d.TrainDigest, d.TestDigest = tr, va, "", ""
			d.FeatureNames = names
			c.Data = &d
			r, err := Fit(ctx, c)
			if err != nil {
				return nil, fmt.Errorf("backtest fold %s … %s: %w", from.Format(features.DateLayout), until.Format(features.DateLayout), err)
			}
			f := fit{fold: Fold{From: from, Until: until, TrainRows: len(tr), Seed: seed, Baselines: map[string]float64{}}, valid: va, model: r.Model}
			for name, m := range Baselines(names, va) {
				f.fold.Baselines[name] = m["mae"]
			}
			if tree {
				f.curve = treeCurve(r.Model, va)
			} else {
				f.pred = predictAll(r.Model, va)
			}
			fits = append(fits, f)
		}
	}
	if tree { // the tree count with the lowest mean MAE over folds and seeds
		n := len(fits[0].curve)
		for _, f := range fits {
			n = min(n, len(f.curve))
		}
		best, bestMAE := 1, math.Inf(1)
		for t := 1; t <= n; t++ {
			var s float64
			for _, f := range fits {
				s += f.curve[t-1]
			}
			if s < bestMAE-1e-12 {
				best, bestMAE = t, s
			}
		}
		res.Iterations = best
	}
	var maes []float64
	for i := range fits {
		f := &fits[i]
		if tree {
			f.pred = treePredict(f.model, f.valid, res.Iterations)
		}
		m := eval.Regression(targets(f.valid), f.pred)
		f.fold.MAE, f.fold.Bias = m.MAE, bias(f.valid, f.pred)
		res.Folds = append(res.Folds, f.fold)
		maes = append(maes, m.MAE)
		res.BiasMean += f.fold.Bias / float64(len(fits))
		for k, v := range f.fold.Baselines {
			res.Baselines[k] += v / float64(len(fits))
		}
	}
	res.MAEMean, res.MAESD = meanSD(maes)
	// split conformal: the last fold, first seed
	last := fits[len(fits)-len(bt.Seeds)]
	abs := make([]float64, len(last.valid))
	for i, e := range last.valid {
		abs[i] = math.Abs(last.pred[i] - e.Target)
	}
	res.HalfWidth = ConformalQuantile(abs, bt.Level)
	return res, nil
}

// ConformalQuantile is the split-conformal half-width: the
// ⌈(n+1)·level⌉-th smallest absolute error (the largest when that exceeds n).
func ConformalQuantile(absErrors []float64, level float64) float64 {
	if len(absErrors) == 0 {
		return 0
	}
	s := append([]float64(nil), absErrors...)
	sort.Float64s(s)
	k := int(math.Ceil(float64(len(s)+1)*level)) - 1
	return s[max(0, min(k, len(s)-1))]
}

// Coverage is the share of rows whose truth lies within pred ± halfWidth.
func Coverage(rows []Example, pred []float64, halfWidth float64) float64 {
	if len(rows) == 0 {
		return 0
	}
	in := 0
	for i, e := range rows {
		if math.Abs(pred[i]-e.Target) <= halfWidth {
			in++
		}
	}
	return float64(in) / float64(len(rows))
}

// Interval returns the card's interval for a fitted result: the backtest's
// half-width and its coverage on the result's test rows.
func (b *BacktestResult) Interval(r *Result, test []Example) *modelrepo.Interval {
	last := b.Folds[len(b.Folds)-1]
	return &modelrepo.Interval{Level: b.Level, HalfWidth: round6(b.HalfWidth), Coverage: round6(Coverage(test, predictAll(r.Model, test), b.HalfWidth)),
		Method: fmt.Sprintf("split conformal: prediction ± the %.0f %% quantile of absolute errors on the last backtest fold, %s … %s",
			100*b.Level, last.From.Format(features.DateLayout), last.Until.Format(features.DateLayout))}
}

func meanSD(v []float64) (mean, sd float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	if len(v) < 2 {
		return mean, 0
	}
	for _, x := range v {
		sd += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(sd / float64(len(v)-1))
}

// fitted gbdt model behind a Predictor (possibly a RatioModel).
func gbdtOf(p Predictor) (*gbdt.Model, int) {
	switch m := p.(type) {
	case RatioModel:
		g, _ := m.Model.(*gbdt.Model)
		return g, m.Column
	case *gbdt.Model:
		return m, -1
	}
	return nil, -1
}

var errNotTrees = errors.New("backtest: not a tree model")

// treeCurve returns the MAE on rows after each tree of a gbdt model.
func treeCurve(p Predictor, rows []Example) []float64 {
	g, ratio := gbdtOf(p)
	if g == nil {
		panic(errNotTrees)
	}
	raw := make([]float64, len(rows))
	for i := range raw {
		raw[i] = g.Base
	}
	curve := make([]float64, len(g.Trees))
	for t, tree := range g.Trees {
		var s float64
		for i, e := range rows {
			raw[i] += tree.Predict(e.Features)
			p := raw[i]
			if ratio >= 0 {
				p *= e.Features[ratio]
			}
			s += math.Abs(p - e.Target)
		}
		curve[t] = s / float64(len(rows))
	}
	return curve
}

// treePredict predicts rows with the first n trees of a gbdt model.
func treePredict(p Predictor, rows []Example, n int) []float64 {
	g, ratio := gbdtOf(p)
	if g == nil {
		panic(errNotTrees)
	}
	out := make([]float64, len(rows))
	for i, e := range rows {
		v := g.Base
		for _, tree := range g.Trees[:min(n, len(g.Trees))] {
			v += tree.Predict(e.Features)
		}
		if ratio >= 0 {
			v *= e.Features[ratio]
		}
		out[i] = v
	}
	return out
}
