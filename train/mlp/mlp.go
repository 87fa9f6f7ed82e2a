// Package mlp fits a multi-layer perceptron regressor: standardised inputs
// with a one-hot day of week, ReLU hidden layers, a linear output on the
// standardised target, squared-error loss with L2 weight decay, Adam on
// seeded mini-batches and early stopping on a seeded validation split (the
// weights of the best validation epoch are kept).
package mlp

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/flywheel-ml/flywheel/internal/validate"
	"github.com/flywheel-ml/flywheel/train/preprocess"
)

// Config holds the hyper-parameters (scikit-learn MLPRegressor's names where
// they exist).
type Config struct {
	Hidden             []int   `yaml:"hidden" json:"hidden"`                           // units per hidden layer
	LearningRate       float64 `yaml:"learning_rate" json:"learning_rate"`             // Adam step size
	BatchSize          int     `yaml:"batch_size" json:"batch_size"`                   // rows per mini-batch
	Epochs             int     `yaml:"epochs" json:"epochs"`                           // passes over the data, at most
	L2                 float64 `yaml:"l2" json:"l2"`                                   // weight decay (alpha)
	ValidationFraction float64 `yaml:"validation_fraction" json:"validation_fraction"` // rows held out for early stopping
	Patience           int     `yaml:"patience" json:"patience"`                       // epochs without improvement before stopping
	Tolerance          float64 `yaml:"tolerance" json:"tolerance"`                     // smallest improvement that counts
	Beta1              float64 `yaml:"beta1" json:"beta1"`
	Beta2              float64 `yaml:"beta2" json:"beta2"`
	Epsilon            float64 `yaml:"epsilon" json:"epsilon"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Hidden: []int{64, 32}, LearningRate: 1e-3, BatchSize: 32, Epochs: 300, L2: 1e-4,
		ValidationFraction: 0.1, Patience: 20, Tolerance: 1e-5, Beta1: 0.9, Beta2: 0.999, Epsilon: 1e-8}
}

// Validate checks the configuration; errors name the parameter.
func (c Config) Validate() error {
	var v validate.Errors
	v.If(len(c.Hidden) == 0, "hidden must list at least one layer size")
	for i, h := range c.Hidden {
		v.If(h < 1, "hidden[%d] %d must be ≥ 1", i, h)
	}
	v.If(!(c.LearningRate > 0), "learning_rate %v must be > 0", c.LearningRate)
	v.If(c.BatchSize < 1, "batch_size %d must be ≥ 1", c.BatchSize)
	v.If(c.Epochs < 1, "epochs %d must be ≥ 1", c.Epochs)
	v.If(c.L2 < 0, "l2 %v must be ≥ 0", c.L2)
	v.If(!(c.ValidationFraction > 0 && c.ValidationFraction < 1), "validation_fraction %v must be in (0, 1)", c.ValidationFraction)
	v.If(c.Patience < 1, "patience %d must be ≥ 1", c.Patience)
	v.If(!(c.Beta1 >= 0 && c.Beta1 < 1) || !(c.Beta2 >= 0 && c.Beta2 < 1) || !(c.Epsilon > 0), "adam: beta1 %v and beta2 %v must be in [0, 1), epsilon %v > 0", c.Beta1, c.Beta2, c.Epsilon)
	return v.Err("mlp")
}

// Layer is a dense layer: out = W·in + B with W stored row-major [Out][In].
type Layer struct {
	In, Out int
	W       []float64
	B       []float64
}

// Model is a fitted network. Hidden layers use ReLU, the last is linear;
// prediction = output·YScale + YMean.
type Model struct {
	Prep   *preprocess.Standardizer
	Layers []Layer
	YMean  float64
	YScale float64
	// BestEpoch is the epoch whose weights were kept (best validation loss).
	BestEpoch int
}

// Predict returns the prediction for one raw feature vector.
func (m *Model) Predict(x []float64) float64 {
	a := m.Prep.Transform(nil, x)
	for li, l := range m.Layers {
		out := make([]float64, l.Out)
		for o := 0; o < l.Out; o++ {
			s := l.B[o]
			w := l.W[o*l.In : (o+1)*l.In]
			for i, v := range a {
				s += w[i] * v
			}
			if li < len(m.Layers)-1 && s < 0 {
				s = 0
			}
			out[o] = s
		}
		a = out
	}
	return a[0]*m.YScale + m.YMean
}

// Step is one epoch's losses: RMSE in target units.
type Step struct {
	Epoch     int
	TrainRMSE float64
	ValidRMSE float64
}

// Progress is called after every epoch with the epoch and the maximum.
type Progress func(s Step, total int)

// Fit trains the network on X, y; oneHot is the raw column to one-hot encode
// into categories (-1 for none); seed drives initialisation, the validation
// split and the batch order.
func Fit(ctx context.Context, cfg Config, X [][]float64, y []float64, oneHot, categories int, seed uint64, progress Progress) (*Model, []Step, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	if len(X) < 2 || len(X) != len(y) {
		return nil, nil, errors.New("mlp: need as many targets as rows, at least two")
	}
	rng := rand.New(rand.NewPCG(seed, 0x2545f4914f6cdd1d))
	perm := rng.Perm(len(X))
	nv := int(math.Round(cfg.ValidationFraction * float64(len(X))))
	nv = max(1, min(nv, len(X)-1))
	validIdx, trainIdx := perm[:nv], perm[nv:]

	trainX := make([][]float64, len(trainIdx))
	for k, i := range trainIdx {
		trainX[k] = X[i]
	}
	prep, err := preprocess.Fit(trainX, oneHot, categories)
	if err != nil {
		return nil, nil, err
	}
	Z := prep.TransformAll(X)
	m := &Model{Prep: prep}
	for _, i := range trainIdx {
		m.YMean += y[i]
	}
	m.YMean /= float64(len(trainIdx))
	for _, i := range trainIdx {
		m.YScale += (y[i] - m.YMean) * (y[i] - m.YMean)
	}
	m.YScale = math.Sqrt(m.YScale / float64(len(trainIdx)))
	if m.YScale < 1e-12 {
		m.YScale = 1
	}
	ys := make([]float64, len(y))
	for i := range y {
		ys[i] = (y[i] - m.YMean) / m.YScale
	}

	sizes := append(append([]int{prep.Width()}, cfg.Hidden...), 1)
	for l := 0; l+1 < len(sizes); l++ {
		in, out := sizes[l], sizes[l+1]
		L := Layer{In: in, Out: out, W: make([]float64, in*out), B: make([]float64, out)}
		a := math.Sqrt(6 / float64(in)) // He uniform
		for i := range L.W {
			L.W[i] = (2*rng.Float64() - 1) * a
		}
		m.Layers = append(m.Layers, L)
	}
	t := newTrainer(m, cfg)
	best := cloneLayers(m.Layers)
	bestLoss, bestEpoch := math.Inf(1), 0
	var history []Step
	for epoch := 1; epoch <= cfg.Epochs; epoch++ {
		if err := ctx.Err(); err != nil {
			return nil, nil, fmt.Errorf("mlp: %w", err)
		}
		rng.Shuffle(len(trainIdx), func(i, j int) { trainIdx[i], trainIdx[j] = trainIdx[j], trainIdx[i] })
		var sse float64
		for start := 0; start < len(trainIdx); start += cfg.BatchSize {
			batch := trainIdx[start:min(start+cfg.BatchSize, len(trainIdx))]
			sse += t.step(Z, ys, batch)
		}
		st := Step{Epoch: epoch, TrainRMSE: math.Sqrt(sse/float64(len(trainIdx))) * m.YScale}
		var vse float64
		for _, i := range validIdx {
			d := t.forward(Z[i]) - ys[i]
			vse += d * d
		}
		vloss := vse / float64(len(validIdx))
		st.ValidRMSE = math.Sqrt(vloss) * m.YScale
		history = append(history, st)
		if progress != nil {
			progress(st, cfg.Epochs)
		}
		if vloss < bestLoss-cfg.Tolerance {
			bestLoss, bestEpoch = vloss, epoch
			best = cloneLayers(m.Layers)
		} else if epoch-bestEpoch >= cfg.Patience {
			break
		}
	}
	m.Layers = best
	m.BestEpoch = bestEpoch
	return m, history, nil
}

func cloneLayers(ls []Layer) []Layer {
	out := make([]Layer, len(ls))
	for i, l := range ls {
		out[i] = Layer{In: l.In, Out: l.Out, W: append([]float64(nil), l.W...), B: append([]float64(nil), l.B...)}
	}
	return out
}

// trainer holds activations, gradients and Adam moments.
type trainer struct {
	m      *Model
	cfg    Config
	acts   [][]float64 // acts[0] = input, acts[l+1] = output of layer l (after ReLU for hidden)
	deltas [][]float64
	gW, gB [][]float64
	mW, vW [][]float64
	mB, vB [][]float64
	t      int
}

func newTrainer(m *Model, cfg Config) *trainer {
	t := &trainer{m: m, cfg: cfg}
	t.acts = append(t.acts, nil)
	for _, l := range m.Layers {
		t.acts = append(t.acts, make([]float64, l.Out))
		t.deltas = append(t.deltas, make([]float64, l.Out))
		for _, s := range []*[][]float64{&t.gW, &t.mW, &t.vW} {
			*s = append(*s, make([]float64, len(l.W)))
		}
		for _, s := range []*[][]float64{&t.gB, &t.mB, &t.vB} {
			*s = append(*s, make([]float64, len(l.B)))
		}
	}
	return t
}

// forward returns the standardised output for z and keeps activations.
func (t *trainer) forward(z []float64) float64 {
	t.acts[0] = z
	last := len(t.m.Layers) - 1
	for li, l := range t.m.Layers {
		in, out := t.acts[li], t.acts[li+1]
		for o := 0; o < l.Out; o++ {
			s := l.B[o]
			w := l.W[o*l.In : (o+1)*l.In]
			for i, v := range in {
				s += w[i] * v
			}
			if li < last && s < 0 {
				s = 0
			}
			out[o] = s
		}
	}
	return t.acts[len(t.acts)-1][0]
}

// step does one Adam update on a batch and returns its sum of squared errors.
func (t *trainer) step(Z [][]float64, ys []float64, batch []int) float64 {
	for l := range t.gW {
		clear(t.gW[l])
		clear(t.gB[l])
	}
	var sse float64
	last := len(t.m.Layers) - 1
	for _, i := range batch {
		e := t.forward(Z[i]) - ys[i]
		sse += e * e
		t.deltas[last][0] = e // d(½e²)/d out
		for li := last; li >= 0; li-- {
			l := t.m.Layers[li]
			in, d := t.acts[li], t.deltas[li]
			gW, gB := t.gW[li], t.gB[li]
			for o := 0; o < l.Out; o++ {
				if d[o] == 0 {
					continue
				}
				gB[o] += d[o]
				row := gW[o*l.In : (o+1)*l.In]
				for k, v := range in {
					row[k] += d[o] * v
				}
			}
			if li > 0 {
				prev := t.deltas[li-1]
				act := t.acts[li]
				for k := range prev {
					prev[k] = 0
				}
				for o := 0; o < l.Out; o++ {
					if d[o] == 0 {
						continue
					}
					w := l.W[o*l.In : (o+1)*l.In]
					for k := range prev {
						prev[k] += w[k] * d[o]
					}
				}
				for k := range prev {
					if act[k] <= 0 { // ReLU gradient
						prev[k] = 0
					}
				}
			}
		}
	}
	n := float64(len(batch))
	t.t++
	c1 := 1 - math.Pow(t.cfg.Beta1, float64(t.t))
	c2 := 1 - math.Pow(t.cfg.Beta2, float64(t.t))
	lr := t.cfg.LearningRate * math.Sqrt(c2) / c1
	for li := range t.m.Layers {
		l := &t.m.Layers[li]
		adam(l.W, t.gW[li], t.mW[li], t.vW[li], n, t.cfg.L2, t.cfg, lr)
		adam(l.B, t.gB[li], t.mB[li], t.vB[li], n, 0, t.cfg, lr)
	}
	return sse
}

func adam(p, g, m, v []float64, n, l2 float64, cfg Config, lr float64) {
	b1, b2 := cfg.Beta1, cfg.Beta2
	for i := range p {
		gi := g[i]/n + l2*p[i]
		m[i] = b1*m[i] + (1-b1)*gi
		v[i] = b2*v[i] + (1-b2)*gi*gi
		p[i] -= lr * m[i] / (math.Sqrt(v[i]) + cfg.Epsilon)
	}
}
