package pipeline

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
)

// Gate settings of the noise-aware comparison.
const (
	// GateLevel is the confidence of the paired bootstrap interval.
	GateLevel = 0.95
	// GateResamples is the number of bootstrap resamples.
	GateResamples = 2000
	// GateBlock is the block length of the moving-block bootstrap in rows
	// (days): errors of neighbouring days are correlated, so whole weeks are
	// resampled together.
	GateBlock = 7
)

// GateInput is what the gate compares: the champion's and the candidate's
// predictions of the same freshest labelled rows, and optionally a naive
// forecast of them (the seasonal naive: the same weekday 364 days earlier).
type GateInput struct {
	Truth, Champion, Candidate []float64
	Naive                      []float64 // nil: no naive check
	Metric                     string    // mae (absolute errors) or rmse (squared errors)
	Threshold                  float64   // the gate metric's ceiling; 0: none
	Margin                     float64   // the candidate's mean must also beat the champion's by this fraction
	Seed                       uint64    // bootstrap seed (the same input gives the same decision)
}

// GateDecision is the gate's verdict with its evidence.
type GateDecision struct {
	Champion, Candidate, Naive float64 // the gate metric of each (Naive NaN when absent)
	// DiffMean is mean(candidate loss − champion loss) per row (absolute
	// error, or squared error for rmse); DiffLow … DiffHigh its paired
	// moving-block bootstrap GateLevel interval.
	DiffMean, DiffLow, DiffHigh float64
	Better                      bool // the interval lies below zero (and the margin is met)
	Rescue                      bool // the champion breaches the threshold and the candidate does not
	Promote                     bool
	Reasons                     []string // why not, when !Promote
}

// Summary is one line for logs and the job's step detail.
func (d GateDecision) Summary(metric string, champVer int) string {
	s := fmt.Sprintf("candidate %s %.4f vs champion v%d %.4f; paired bootstrap %.0f %% interval of (candidate − champion) per-row error [%+.4f, %+.4f]",
		metric, d.Candidate, champVer, d.Champion, 100*GateLevel, d.DiffLow, d.DiffHigh)
	if !math.IsNaN(d.Naive) {
		s += fmt.Sprintf("; seasonal naive %.4f", d.Naive)
	}
	switch {
	case d.Promote && d.Better:
		s += ": promote (really better)"
	case d.Promote && d.Rescue:
		s += ": promote (the champion breaches its threshold, the candidate does not)"
	default:
		s += ": reject (" + strings.Join(d.Reasons, "; ") + ")"
	}
	return s
}

// Metrics are the decision as card and tracker metrics ("gate" split).
func (d GateDecision) Metrics() map[string]float64 {
	m := map[string]float64{"champion": d.Champion, "candidate": d.Candidate, "diff_mean": d.DiffMean,
		"diff_low": d.DiffLow, "diff_high": d.DiffHigh, "level": GateLevel, "promote": b2f(d.Promote), "rescue": b2f(d.Rescue)}
	if !math.IsNaN(d.Naive) {
		m["seasonal_naive"] = d.Naive
	}
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Decide runs the gate: promote when the candidate is really better (the
// bootstrap interval of the per-row loss difference lies below zero) or when
// the champion breaches the threshold and the candidate does not; in both
// cases the candidate must beat the naive forecast.
func Decide(in GateInput) GateDecision {
	n := len(in.Truth)
	loss := func(pred []float64, i int) float64 {
		e := pred[i] - in.Truth[i]
		if in.Metric == "rmse" {
			return e * e
		}
		return math.Abs(e)
	}
	diff := make([]float64, n)
	var champ, cand, naive float64
	for i := 0; i < n; i++ {
		lc, lk := loss(in.Champion, i), loss(in.Candidate, i)
		diff[i] = lk - lc
		champ += lc
		cand += lk
		if in.Naive != nil {
			naive += loss(in.Naive, i)
		}
	}
	agg := func(s float64) float64 {
		if in.Metric == "rmse" {
			return math.Sqrt(s / float64(n))
		}
		return s / float64(n)
	}
	d := GateDecision{Champion: agg(champ), Candidate: agg(cand), Naive: math.NaN()}
	if in.Naive != nil {
		d.Naive = agg(naive)
	}
	d.DiffMean = mean(diff)
	d.DiffLow, d.DiffHigh = blockBootstrap(diff, GateBlock, GateResamples, GateLevel, in.Seed)
	d.Better = d.DiffHigh < 0 && d.Candidate <= d.Champion*(1-in.Margin)
	candOK := in.Threshold <= 0 || d.Candidate <= in.Threshold
	d.Rescue = in.Threshold > 0 && d.Champion > in.Threshold && candOK
	if !d.Better && !d.Rescue {
		if d.DiffHigh >= 0 {
			d.Reasons = append(d.Reasons, "not better than the champion beyond noise: the interval reaches zero")
		} else {
			d.Reasons = append(d.Reasons, fmt.Sprintf("not better than the champion by the margin (%.1f%%)", 100*in.Margin))
		}
		if !candOK {
			d.Reasons = append(d.Reasons, fmt.Sprintf("above the %s threshold %.4f", metricName(in.Metric), in.Threshold))
		}
	}
	if in.Naive != nil && !(d.Candidate < d.Naive) {
		d.Reasons = append(d.Reasons, "does not beat the seasonal naive")
	}
	d.Promote = len(d.Reasons) == 0
	return d
}

func mean(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// blockBootstrap returns the central level interval of the mean of v under a
// moving-block bootstrap with blocks of the given length (shorter series use
// blocks of one), seeded.
func blockBootstrap(v []float64, block, resamples int, level float64, seed uint64) (lo, hi float64) {
	n := len(v)
	if n == 0 {
		return math.NaN(), math.NaN()
	}
	if block > n/2 {
		block = 1
	}
	rng := rand.New(rand.NewPCG(seed, 0xda3e39cb94b95bdb))
	means := make([]float64, resamples)
	for r := range means {
		var s float64
		k := 0
		for k < n {
			start := rng.IntN(n - block + 1)
			for j := start; j < start+block && k < n; j++ {
				s += v[j]
				k++
			}
		}
		means[r] = s / float64(n)
	}
	sort.Float64s(means)
	a := (1 - level) / 2
	return means[int(math.Floor(a*float64(resamples-1)))], means[int(math.Ceil((1-a)*float64(resamples-1)))]
}

func metricName(m string) string {
	if m == "" {
		return "mae"
	}
	return m
}
